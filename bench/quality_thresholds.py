"""Measure the quality gate's thresholds on a planted-defect set of real photos, and check them on held-out photos.

    PYTHONPATH=src python bench/quality_thresholds.py measure --split tuning   -o /tmp/q-tuning.json
    PYTHONPATH=src python bench/quality_thresholds.py measure --split held-out -o /tmp/q-held.json
    PYTHONPATH=src python bench/quality_thresholds.py table /tmp/q-tuning.json [/tmp/q-held.json]

``measure``: for every photo of the split (bench/photos.py, all >= 3840 px), masks (two ellipses of different
sizes and a box) at seeded places; for each mask the *clean* cases -- the unedited photo (a null mask: a clean
contour), two clean edits (fresh grain of a third of the photo's own, feathered by 32 and 16 px) -- the *good*
edits (:data:`GOOD`: paste-then-remove where the removal returns the truth re-compressed at JPEG q95, blurred by
sigma 0.5 px, or through crispedit's harness with the oracle engine of bench/oracle.py; see :func:`good_edits`),
crispedit's
own classical removal (on the small ellipse; reported apart: it may have real defects) and every planted defect of :data:`crispedit.quality.defects.PLANTED` at each strength, from just
visible to obvious. Every region's metrics are stored (JSON) so that ``table`` can re-judge them with other
thresholds without measuring again. ``--kinds`` limits the cases to those kinds (clean and good kinds included:
``--kinds good_jpeg95 good_blur0.5 good_oracle`` measures only the good edits).

``table``: per defect kind and strength, the share that fails (detection rate), the share of clean cases that
fail (false alarms, per clean kind), and which check caught what; the numbers go to docs/quality.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from photos import get_photo_info  # noqa: E402

from crispedit.io import load_image  # noqa: E402
from crispedit.quality import defects as D  # noqa: E402
from crispedit.quality.verdict import DEFAULT_THRESHOLDS, Thresholds, _judge_unit, assess  # noqa: E402


def masks_for(h: int, w: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """Two ellipses (radius 6% and 12% of the short side) and a box (16%), at seeded places."""
    rng = np.random.default_rng(seed)
    short = min(h, w)
    out = []
    for name, frac in (("ell_s", 0.06), ("ell_l", 0.12), ("box", 0.08)):
        r = frac * short
        cx = rng.uniform(r * 1.5 + 64, w - r * 1.5 - 64)
        cy = rng.uniform(r * 1.5 + 64, h - r * 1.5 - 64)
        if name == "box":
            m = np.zeros((h, w), bool)
            m[int(cy - r) : int(cy + r), int(cx - 1.3 * r) : int(cx + 1.3 * r)] = True
        else:
            m = D.ellipse_mask(h, w, cx, cy, r * 1.25, r, rng.uniform(0, 180))
        out.append((name, m))
    return out


def _on_crop(fn, img: np.ndarray, m: np.ndarray, s: float, margin: int = 320, **kw) -> np.ndarray:
    """``fn`` applied to the mask's bounding box plus ``margin`` and pasted back (the defects never reach farther;
    planting on the full 4K-6K float image would cost more than measuring it)."""
    ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
    h, w = m.shape
    y0, y1 = max(0, ys[0] - margin), min(h, ys[-1] + margin + 1)
    x0, x1 = max(0, xs[0] - margin), min(w, xs[-1] + margin + 1)
    out = img.copy()
    if "clean" in kw:
        kw["clean"] = kw["clean"][y0:y1, x0:x1]
    out[y0:y1, x0:x1] = fn(np.ascontiguousarray(img[y0:y1, x0:x1]), np.ascontiguousarray(m[y0:y1, x0:x1]), s, **kw)
    return out


#: planted defects (at their "clearly visible" strength) on top of a good removal: the checks of replaced content
REMOVAL_DEFECTS = {"tone_step": 4.0, "tone_step_feathered": 4.0, "colour_cast": 3.0, "hard_block": 64.0,
                   "grid_lines": 3.0, "blurred_patch": 1.5}

#: the planted softenings whose visibility depends on the content (a blur of bokeh changes nothing): each case
#: stores :func:`crispedit.quality.defects.planted_change`, and ``table`` counts the must-fail ones that
#: measurably changed the photo (``visible``) apart from those that did not
SOFTENING = ("blurred_patch", "noise_free_patch")

GOOD = ("good_jpeg95", "good_blur0.5", "good_oracle", "retouch_jpeg95", "retouch_blur0.5")


def good_edits(img: np.ndarray, m: np.ndarray, seed: int, kinds: list[str] | None,
               removal_defects: list | None = None):
    """Good edits, each the second half of a paste-then-remove: the original given to the gate is the photo with
    foreign content pasted into the mask (:func:`crispedit.quality.defects.paste_seam`, opacity 1), and the edit
    returns the truth (the photo): re-compressed as JPEG q95, or blurred with sigma 0.5 px, inside a soft mask
    (:func:`crispedit.quality.defects.good_removal`), or crispedit's own edit with the oracle engine
    (bench/oracle.py, variant soft0.8: the true content, softened as a VAE decodes it). The ``retouch_*`` kinds are
    the same processing of the truth with the truth itself as the original (an edit that keeps the content).
    Yields (kind, original, edited)."""
    want = [k for k in GOOD if not kinds or k in kinds]
    if not want:
        return
    for how in ("jpeg95", "blur0.5"):
        if f"retouch_{how}" in want:
            yield f"retouch_{how}", img, _on_crop(lambda a, b, s, how=how: D.good_removal(a, a, b, how), img, m, 0)
    pasted = _on_crop(D.paste_seam, img, m, 1.0)
    for how in ("jpeg95", "blur0.5"):
        if f"good_{how}" in want:
            yield f"good_{how}", pasted, _on_crop(lambda a, b, s, how=how: D.good_removal(
                pasted_crop(a, b), a, b, how), img, m, 0)
    if "good_jpeg95" in want and removal_defects is not None:
        removal = _on_crop(lambda a, b, s: D.good_removal(pasted_crop(a, b), a, b, "jpeg95"), img, m, 0)
        removal_defects.append((pasted, removal))
    if "good_oracle" in want:
        from oracle import OracleEngine

        from crispedit.harness import edit

        # the user's mask around the pasted object has a margin (the harness blends across the mask's edge: a mask
        # that ends exactly at the object's outline leaves a line of it inside the blend band, a real seam)
        yield "good_oracle", pasted, edit(pasted, oracle_mask(m), engine=OracleEngine.variant("soft0.8", img),
                                          seed=seed).array


def oracle_mask(m: np.ndarray) -> np.ndarray:
    """The mask of the ``good_oracle`` removal: the pasted object's mask grown by its default blend band."""
    import cv2

    from crispedit.quality.metrics import default_band

    r = default_band(m)
    return cv2.dilate(m.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0


def pasted_crop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The paste of :func:`good_edits` on a crop (the same offset rule as on the full photo's crop)."""
    return D.paste_seam(a, b, 1.0)


def cases(img: np.ndarray, m: np.ndarray, seed: int, kinds: list[str] | None, engine: bool = True):
    """(group, kind, strength, must_fail, original, edited): the clean cases, the good edits, crispedit's classical
    removal, then the planted defects."""
    if not kinds or "unedited" in kinds:
        yield "clean", "unedited", 0.0, False, img, img
    if not kinds or "clean_edit" in kinds:
        yield "clean", "clean_edit", 0.0, False, img, _on_crop(lambda a, b, s: D.clean_edit(a, b, seed=seed), img,
                                                               m, 0)
    if not kinds or "clean_edit_x2" in kinds:
        yield "clean", "clean_edit_x2", 0.0, False, img, _on_crop(
            lambda a, b, s: D.clean_edit(a, b, seed=seed + 1, extra_noise=None, feather=16), img, m, 0)
    removals: list = []
    for kind, orig, ed in good_edits(img, m, seed, kinds, removals):
        yield "good", kind, 0.0, False, orig, ed
    if not removals and (not kinds or any(k.startswith("removal_") for k in kinds)):
        list(good_edits(img, m, seed, ["good_jpeg95"], removals))
    for pasted, removal in removals[:1]:
        # the replace path: a good removal (the truth at q95 over the pasted object) with a planted defect
        for kind, s in REMOVAL_DEFECTS.items():
            if kinds and f"removal_{kind}" not in kinds:
                continue
            fn, _, _, kw = D.PLANTED[kind]
            yield "planted", f"removal_{kind}", float(s), True, pasted, _on_crop(fn, removal, m, s, **dict(kw))
    if (not kinds or "classical" in kinds) and engine:
        from crispedit.harness import edit

        yield "engine", "classical", 0.0, False, img, edit(img, m, engine="classical", seed=seed).array
    for kind, (fn, strengths, visible, kw) in D.PLANTED.items():
        if kinds and kind not in kinds:
            continue
        if kind == "noise_free_patch":
            kw = dict(kw, clean=D.denoise_around(img, m, pad=48))
        for s in strengths:
            yield "planted", kind, float(s), s >= visible, img, _on_crop(fn, img, m, s, **dict(kw))


def measure(args: argparse.Namespace) -> int:
    photos = [(p, path) for p, path in get_photo_info() if p.split == args.split]
    if args.photos:
        photos = [(p, path) for p, path in photos if p.name in args.photos]
    records = []
    for photo, path in photos:
        img = load_image(path).array
        if img.ndim == 3 and img.shape[2] > 3:
            img = np.ascontiguousarray(img[:, :, :3])
        h, w = img.shape[:2]
        for mname, m in masks_for(h, w, zlib.crc32(photo.name.encode()) % 10_000):
            for group, kind, s, must, orig, ed in cases(img, m, 0, args.kinds,
                                                        engine=mname == "ell_s" and not args.no_engine):
                t = time.perf_counter()
                rep = assess(orig, ed, oracle_mask(m) if kind == "good_oracle" else m, no_reference=False)
                dt = time.perf_counter() - t
                rec = {"photo": photo.name, "size": [w, h], "mask": mname, "group": group, "kind": kind,
                       "strength": s, "must_fail": must, "verdict": rep.verdict, "seconds": round(dt, 3),
                       "defects": [d.to_dict() for d in rep.defects], "unmeasured": rep.unmeasured,
                       "outside_changed_pixels": rep.metrics.get("outside_changed_pixels", 0),
                       "regions": rep.to_dict()["regions"]}
                if kind in SOFTENING:  # what the planted blur or grain removal measurably changed
                    rec["change"] = {k: round(v, 4) for k, v in D.planted_change(orig, ed, m).items()}
                records.append(rec)
                print(f"{photo.name:10s} {mname:6s} {kind:20s} {s:6g} {rep.verdict:10s} {dt:5.2f}s "
                      + "; ".join(f"{d.kind}:{d.key}={d.value:.2f}" for d in rep.defects), flush=True)
        # written after every photo, so a long run can be read while it goes on
        Path(args.output).write_text(json.dumps({"split": args.split, "records": records}, indent=0))
    Path(args.output).write_text(json.dumps({"split": args.split, "records": records}, indent=0))
    print(f"wrote {args.output}: {len(records)} cases")
    return 0


def rejudge(rec: dict, th: Thresholds) -> tuple[str, list[str]]:
    """The verdict of a stored record under thresholds ``th`` (same logic as :func:`assess`)."""
    kinds = []
    unmeasured = False
    if rec["outside_changed_pixels"] > th.outside_changed_max:
        kinds.append("outside_changed")
    for reg in rec["regions"]:
        m = {k: (tuple(v) if isinstance(v, list) else (float("nan") if v is None else v))
             for k, v in reg["metrics"].items()}
        m["seam_z"] = {}
        if "detail_original" not in m and all(isinstance(m.get(k), float) for k in ("detail_inside",
                                                                                    "detail_ratio_original")):
            # records measured before the key was stored: the original's inside detail from the ratio's definition
            f = 0.25 / 255.0
            m["detail_original"] = (m["detail_inside"] + f) / m["detail_ratio_original"] - f
        _, defects, unm = _judge_unit(m, [tuple(p) for p in reg.get("worst_places", [])], th, reg["index"],
                                      reg["name"], th.min_region_px)
        kinds += [f"{d.kind}:{d.key}" for d in defects]
        unmeasured |= bool(unm)
    return ("fail" if kinds else ("unmeasured" if unmeasured else "pass")), kinds


def _visible(rec: dict) -> bool:
    """Did the planted defect measurably change the photo? (Only softenings store the change; others: yes.)"""
    ch = rec.get("change")
    return ch is None or bool(ch.get("visible", 1.0))


def _change_text(rec: dict) -> str:
    ch = rec.get("change") or {}
    return (f"detail {ch.get('detail_before', float('nan')):.2f} -> {ch.get('detail_after', float('nan')):.2f}, "
            f"grain {ch.get('noise_before', float('nan')):.2f} -> {ch.get('noise_after', float('nan')):.2f}, "
            f"|change| mean {ch.get('change_mean', float('nan')):.2f} p99 {ch.get('change_p99', float('nan')):.1f}")


def table(args: argparse.Namespace) -> int:
    th = DEFAULT_THRESHOLDS
    if args.set:
        th = dataclasses.replace(th, **{k: type(getattr(th, k))(v) for k, v in (a.split("=") for a in args.set)})
    for f in args.files:
        data = json.loads(Path(f).read_text())
        recs = data["records"]
        for extra in args.replace or []:  # a re-measured kind replaces its records (same split)
            more = json.loads(Path(extra).read_text())["records"]
            kinds = {r["kind"] for r in more}
            recs = [r for r in recs if r["kind"] not in kinds] + more
        photos = sorted({r["photo"] for r in recs})
        print(f"\n### {data['split']} photos ({', '.join(photos)}): {len(recs)} cases\n")
        print("| kind | strength | must fail | failed | caught by |")
        print("|---|---|---|---|---|")
        groups = defaultdict(list)
        for r in recs:
            groups[(r["group"], r["kind"], r["strength"])].append(r)
        missed: list[str] = []
        below: list[str] = []
        for (_group, kind, s), rs in sorted(groups.items(), key=lambda kv: (kv[0][0] != "clean", kv[0][1], kv[0][2])):
            res = [rejudge(r, th) for r in rs]
            n_fail = sum(v == "fail" for v, _ in res)
            n_unm = sum(v == "unmeasured" for v, _ in res)
            by = defaultdict(int)
            for _v, ks in res:
                for k in sorted(set(ks)):
                    by[k] += 1
            must = rs[0]["must_fail"]
            cell = f"{n_fail}/{len(rs)}" + (f" ({n_unm} unmeasured)" if n_unm else "")
            flat = [(r, v) for r, (v, _) in zip(rs, res) if not _visible(r)]
            if flat:  # cases whose planted softening changed nothing measurable: the rate over the others too
                n_vis = len(rs) - len(flat)
                cell += (f"; measurably changed: {n_fail - sum(v == 'fail' for _, v in flat)}/{n_vis}"
                         f" (+{len(flat)} below the floor)")
            print(f"| {kind} | {s:g} | {'yes' if must else 'no'} | {cell} | "
                  + ", ".join(f"{k} {n}" for k, n in sorted(by.items(), key=lambda kv: -kv[1])) + " |")
            if must:
                missed += [f"{r['photo']}/{r['mask']}/{kind}/{s:g}" for r, (v, _) in zip(rs, res)
                           if v != "fail" and _visible(r)]
                below += [f"{r['photo']}/{r['mask']}/{kind}/{s:g} ({_change_text(r)}, {v})" for r, (v, _) in
                          zip(rs, res) if not _visible(r)]
        clean = [r for r in recs if r["group"] == "clean"]
        good = [r for r in recs if r["group"] == "good"]
        fa = sum(rejudge(r, th)[0] == "fail" for r in clean)
        fg = sum(rejudge(r, th)[0] == "fail" for r in good)
        kept_missed = [x for x in missed if "/removal_" not in x]
        fill_missed = [x for x in missed if "/removal_" in x]
        n_kept = sum(r["must_fail"] and _visible(r) and not r["kind"].startswith("removal_") for r in recs)
        n_fill = sum(r["must_fail"] and r["kind"].startswith("removal_") for r in recs)
        print(f"\nclean cases failed: {fa}/{len(clean)}; good edits failed: {fg}/{len(good)}; clean or good "
              f"failed: {fa + fg}/{len(clean) + len(good)}; must-fail planted defects missed: "
              f"{len(kept_missed)}/{n_kept}" + (f" ({', '.join(kept_missed)})" if kept_missed else "")
              + f"; must-fail defects in a removal missed: {len(fill_missed)}/{n_fill}")
        if below:
            print(f"must-fail softenings that removed less than the floors (detail lost < {D.CHANGE_FLOOR_DETAIL} and "
                  f"grain lost < {D.CHANGE_FLOOR_NOISE} levels), not counted as must-fail: {len(below)} ("
                  + "; ".join(below) + ")")
        secs = [r["seconds"] for r in recs]
        print(f"assess time: median {np.median(secs):.2f} s, max {max(secs):.2f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--split", default="tuning", choices=["tuning", "held-out"])
    m.add_argument("--photos", nargs="*")
    m.add_argument("--kinds", nargs="*")
    m.add_argument("-o", "--output", required=True)
    m.add_argument("--no-engine", action="store_true", help="skip crispedit's classical removals")
    t = sub.add_parser("table")
    t.add_argument("files", nargs="+")
    t.add_argument("--set", nargs="*", help="threshold overrides, e.g. tone_step_max=3.5")
    t.add_argument("--replace", nargs="*", help="files of re-measured kinds that replace those kinds' records")
    args = ap.parse_args(argv)
    return measure(args) if args.cmd == "measure" else table(args)


if __name__ == "__main__":
    sys.exit(main())
