"""Browser-editor benchmark: an 8K JPEG in Debian's Chromium (Playwright), through ``crispedit serve``'s app.

Measures, per run (a fresh document each time, so nothing comes from a cache):

* **first view**: from asking the server to open the 8K JPEG until the fit-to-window view has every tile it needs
  (server decode + pyramid levels + tiles + drawing), and the bytes the browser received for it; ``open_request``
  is the part spent in the open request (the library's full decode of the photo);
* **1:1 view**: from a zoom to 1:1 at the image centre until the 1:1 view is complete, and its bytes;
* **mask stroke latency**: from mouse-up of a 300-px brush stroke until the server has rasterised it and the
  overlay shows it (POST + overlay tiles), at 1:1; the page's own measure of the same (``in_page``: POST sent to
  overlay complete) and how many overlay tiles a stroke made the browser fetch again.

The 8K photo is ``Kleiber_by_Lukas_Baubkus.jpg`` (6028x3391, bench/photos.py) resized to 7680x4320 with OpenCV
``INTER_CUBIC`` and saved as JPEG quality 92.

    python bench/serve.py [--runs 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "src"))

from photos import get_photo_info  # noqa: E402

from crispedit.server.app import ServerConfig  # noqa: E402
from crispedit.server.cli import serve_in_thread  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
W8K, H8K = 7680, 4320


def make_8k(folder: Path) -> Path:
    (_, src), = get_photo_info(["kleiber"])
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    big = cv2.resize(img, (W8K, H8K), interpolation=cv2.INTER_CUBIC)
    out = folder / "kleiber-8k.jpg"
    cv2.imwrite(str(out), big, [cv2.IMWRITE_JPEG_QUALITY, 92])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--width", type=int, default=1920, help="browser viewport width (px)")
    ap.add_argument("--height", type=int, default=1080, help="browser viewport height (px)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory(prefix="crispedit-bench-serve-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        photo = make_8k(root)
        file_bytes = photo.stat().st_size
        with serve_in_thread(ServerConfig(root=root, port=0, work_dir=Path(tmp) / "work")) as url, \
                sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS, headless=True)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            got: list[tuple[str, int]] = []
            timings: dict[str, float] = {}

            def finished(r) -> None:
                got.append((r.url, r.sizes()["responseBodySize"]))
                if r.url.endswith("/api/open"):
                    timings["open"] = r.timing["responseEnd"] / 1000.0  # ms from the request's start

            page.on("requestfinished", finished)
            page.goto(url + "/")
            while not page.evaluate("!!(window.crispedit && crispedit.S.viewer)"):
                time.sleep(0.05)
            for run in range(args.runs):
                got.clear()
                t0 = time.perf_counter()
                page.evaluate("async (p) => { await crispedit.openPath(p); await crispedit.settled(); }", photo.name)
                first_s = time.perf_counter() - t0
                first_bytes = sum(n for _, n in got)
                first_tiles = sum(1 for u, _ in got if "_files/" in u)
                got.clear()
                t0 = time.perf_counter()
                page.evaluate("async ([x, y]) => { crispedit.flyTo(x, y); await crispedit.settled(); }",
                              [W8K // 2, H8K // 2])
                one_s = time.perf_counter() - t0
                one_bytes = sum(n for _, n in got)
                one_tiles = sum(1 for u, _ in got if "_files/" in u)
                zoom = page.evaluate("crispedit.imageZoom()")
                # strokes at 1:1: brush 64 px, 300 px long, mouse events through the viewer
                page.click("#tool-brush")
                page.eval_on_selector("#brush-size", "e => { e.value = 64; e.dispatchEvent(new Event('input')); }")
                box = page.locator("#viewer").bounding_box()
                cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
                lat, server, refetched = [], [], []
                for k in range(5):
                    y = cy - 200 + 80 * k
                    rev = page.evaluate("crispedit.S.doc.mask.rev")
                    page.mouse.move(cx - 150, y)
                    page.mouse.down()
                    page.mouse.move(cx + 150, y, steps=10)
                    got.clear()
                    t0 = time.perf_counter()
                    page.mouse.up()
                    page.wait_for_selector(f"body[data-mask=rev{rev + 1}]")
                    lat.append(time.perf_counter() - t0)
                    refetched.append(sum(1 for u, _ in got if "/mask/" in u and u.endswith(".png")))
                    server.append(page.evaluate("crispedit.S.lastMaskMs") / 1000.0)
                page.click("#tool-pan")
                doc = page.evaluate("crispedit.S.doc.id")
                page.evaluate(f"fetch('/api/docs/{doc}', {{method: 'DELETE'}})")
                rows.append({"run": run + 1, "first_view_s": round(first_s, 3),
                             "open_request_s": round(timings.get("open", float("nan")), 3),
                             "first_view_bytes": first_bytes,
                             "first_view_tiles": first_tiles, "one_to_one_s": round(one_s, 3),
                             "one_to_one_bytes": one_bytes, "one_to_one_tiles": one_tiles,
                             "zoom_reached": round(zoom, 4),
                             "stroke_latency_ms_median": round(1000 * statistics.median(lat), 1),
                             "stroke_latency_ms_max": round(1000 * max(lat), 1),
                             "stroke_in_page_ms_median": round(1000 * statistics.median(server), 1),
                             "stroke_overlay_tiles_median": statistics.median(refetched)})
                print(json.dumps(rows[-1]), flush=True)
            browser.close()
    summary = {
        "photo": f"{photo.name} {W8K}x{H8K}, {file_bytes} bytes", "viewport": f"{args.width}x{args.height}",
        "full_res_rgb_bytes": W8K * H8K * 3, "load": os.getloadavg(), "runs": rows,
        "median": {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "run"},
    }
    print(json.dumps(summary["median"], indent=1))
    print(f"load average: {summary['load']}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
