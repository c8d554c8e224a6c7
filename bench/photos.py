"""Real photographs >= 3840 px wide for the benchmarks, from Debian's Lomiri wallpaper packages (CC licences).

``get_photos()`` returns their paths. Each is looked up, in order, in ``$CRISPEDIT_BENCH_PHOTOS``,
``/work/bench_photos``, ``examples/photos`` (the demo photo) and ``bench/.cache``; what is still missing is fetched
with ``apt-get download PACKAGE`` + ``dpkg -x`` into ``bench/.cache/`` (gitignored).

| photo | size | licence | package | split |
|---|---|---|---|---|
| seeding_by_Clements_Engelhardt.jpg | 5312x2988 | CC0 | lomiri-wallpapers-16.04 | tuning |
| Dragonfly_by_Bolly.jpg | 4224x3168 | CC-BY-SA-4.0 | lomiri-wallpapers-16.04 | tuning |
| sunset_by_Aitzol_Berasategi.jpg | 4272x2848 | CC-BY-4.0 | lomiri-wallpapers-16.04 | held-out |
| Bridge_by_Sander_Klootwijk.jpg | 4352x2448 | CC-BY-SA-4.0 | lomiri-wallpapers-16.04 | held-out |
| Kleiber_by_Lukas_Baubkus.jpg | 6028x3391 | CC-BY-SA-3.0 | lomiri-wallpapers-20.04 | held-out |
| Painting-Colors_by__herobrine7gamer.jpg | 6000x4000 | CC-BY-SA-3.0 | lomiri-wallpapers-20.04 | tuning |
| Fossa_by_Jasper_Roks.jpg | 4096x2304 | CC-BY-SA-3.0 | lomiri-wallpapers-20.04 | tuning |
| umang_by_Abhishek_Mudgal.jpg | 3840x2160 | CC-BY-4.0 | lomiri-wallpapers-16.04 | held-out |
| Infinite-Sea_by_Aury88.jpg | 4096x4096 | CC-BY-SA-3.0 | lomiri-wallpapers-20.04 | held-out |
| Wine_by_Jakkub_Mede.jpg | 2560x3837 (portrait) | CC-BY-4.0 | lomiri-wallpapers-16.04 | held-out |

Run ``python bench/photos.py`` to fetch them and list them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"


@dataclass(frozen=True)
class Photo:
    name: str  # short name used in tables
    file: str  # file name inside the package
    package: str
    licence: str
    split: str  # "tuning" or "held-out"
    aliases: tuple[str, ...] = ()  # other file names it may be found under


PHOTOS: tuple[Photo, ...] = (
    Photo("seeding", "seeding_by_Clements_Engelhardt.jpg", "lomiri-wallpapers-16.04", "CC0", "tuning",
          ("seeding-by-clemens-engelhardt.jpg",)),
    Photo("dragonfly", "Dragonfly_by_Bolly.jpg", "lomiri-wallpapers-16.04", "CC-BY-SA-4.0", "tuning"),
    Photo("sunset", "sunset_by_Aitzol_Berasategi.jpg", "lomiri-wallpapers-16.04", "CC-BY-4.0", "held-out"),
    Photo("bridge", "Bridge_by_Sander_Klootwijk.jpg", "lomiri-wallpapers-16.04", "CC-BY-SA-4.0", "held-out"),
    Photo("kleiber", "Kleiber_by_Lukas_Baubkus.jpg", "lomiri-wallpapers-20.04", "CC-BY-SA-3.0", "held-out"),
    Photo("painting", "Painting-Colors_by__herobrine7gamer.jpg", "lomiri-wallpapers-20.04", "CC-BY-SA-3.0", "tuning"),
    Photo("fossa", "Fossa_by_Jasper_Roks.jpg", "lomiri-wallpapers-20.04", "CC-BY-SA-3.0", "tuning"),
    Photo("umang", "umang_by_Abhishek_Mudgal.jpg", "lomiri-wallpapers-16.04", "CC-BY-4.0", "held-out"),
    Photo("sea", "Infinite-Sea_by_Aury88.jpg", "lomiri-wallpapers-20.04", "CC-BY-SA-3.0", "held-out"),
    Photo("wine", "Wine_by_Jakkub_Mede.jpg", "lomiri-wallpapers-16.04", "CC-BY-4.0", "held-out"),
)


def _search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("CRISPEDIT_BENCH_PHOTOS"):
        dirs.append(Path(os.environ["CRISPEDIT_BENCH_PHOTOS"]))
    dirs += [Path("/work/bench_photos"), ROOT / "examples" / "photos", CACHE]
    return dirs


def _find(photo: Photo) -> Path | None:
    for d in _search_dirs():
        for fname in (photo.file, *photo.aliases):
            p = d / fname
            if p.is_file() and p.stat().st_size > 100_000:
                return p
    return None


def _fetch_package(package: str) -> None:
    """apt-get download + dpkg -x; copy the benchmark photos the package holds into the cache."""
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise RuntimeError("apt-get/dpkg not found: put the photos in bench/.cache/ by hand "
                           f"(they come from the Debian package {package})")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, text=True)
            r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
        debs = list(Path(tmp).glob("*.deb"))
        if r.returncode != 0 or not debs:
            raise RuntimeError(f"apt-get download {package} failed: {r.stderr.strip()[-300:]}")
        subprocess.run(["dpkg", "-x", str(debs[0]), str(Path(tmp) / "x")], check=True)
        wanted = {p.file for p in PHOTOS if p.package == package}
        for jpg in (Path(tmp) / "x").rglob("*.jpg"):
            if jpg.name in wanted and not (CACHE / jpg.name).exists():
                shutil.copy2(jpg, CACHE / jpg.name)


def get_photo_info(names: list[str] | None = None) -> list[tuple[Photo, Path]]:
    """(Photo, path) for the requested photos (all by default), fetching what is missing."""
    wanted = [p for p in PHOTOS if names is None or p.name in names]
    missing = [p for p in wanted if _find(p) is None]
    for package in sorted({p.package for p in missing}):
        _fetch_package(package)
    out = []
    for p in wanted:
        path = _find(p)
        if path is None:
            raise RuntimeError(f"{p.file} not found after fetching {p.package}")
        out.append((p, path))
    return out


def get_photos() -> list[Path]:
    """Paths of the benchmark photos (all >= 3840 px wide), fetched into bench/.cache/ when missing."""
    return [path for _, path in get_photo_info()]


if __name__ == "__main__":
    from PIL import Image

    for photo, path in get_photo_info(sys.argv[1:] or None):
        with Image.open(path) as im:
            print(f"{photo.name:10s} {photo.split:9s} {im.size[0]}x{im.size[1]} {photo.licence:13s} {path}")
