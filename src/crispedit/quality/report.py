"""One self-contained HTML report of an edit: before/after slider, change heatmap, 1:1 crops at the worst places
along the seam, the metrics table with per-metric verdicts, and model cards and timings when known.

Everything is inline: images as base64 (JPEG for the reduced overviews, PNG for the 1:1 crops so they stay exact),
CSS and a few lines of plain JavaScript. The file opens offline in any browser.

>>> from crispedit.quality.defects import photo_like, ellipse_mask, tone_step
>>> import tempfile, pathlib
>>> img = photo_like(256, 320, seed=4)
>>> m = ellipse_mask(256, 320, 160, 128, 60, 50)
>>> p = write_report(img, tone_step(img, m, 12), m, pathlib.Path(tempfile.mkdtemp()) / "r.html")
>>> p.read_text().startswith("<!DOCTYPE html>")
True
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from crispedit.errors import InputError
from crispedit.quality import metrics as M
from crispedit.quality.verdict import QualityReport, assess

__all__ = ["write_report", "render_html"]

OVERVIEW_MAX = 1400  # px, longest side of the overview images
CROP = 224  # px, side of the 1:1 crops
MAX_CROPS = 6


def _to_rgb8(a: np.ndarray) -> np.ndarray:
    """Display copy: 8-bit RGB (16-bit shifted down, grey replicated, alpha dropped)."""
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype != np.uint8:
        a = np.clip(np.asarray(a, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    c = a.shape[2]
    if c == 1 or c == 2:
        return np.repeat(a[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(a[:, :, :3])


def _data_uri(rgb8: np.ndarray, fmt: str = "jpeg", quality: int = 85) -> str:
    bgr = cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
        mime = "image/png"
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        mime = "image/jpeg"
    if not ok:  # pragma: no cover - OpenCV always encodes these
        raise RuntimeError("image encoding failed")
    return f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _shrink(a: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return a
    h, w = a.shape[:2]
    return cv2.resize(a, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _heatmap(original: np.ndarray, edited: np.ndarray, mask: np.ndarray, scale: float, base: np.ndarray,
             places: list[tuple[int, int, float]]) -> np.ndarray:
    """Change heatmap over a darkened grey copy of the edit; mask contour in cyan; worst places numbered."""
    diff = M._max_abs_diff(original, edited).astype(np.float32)
    full = 65535.0 if original.dtype == np.uint16 else 255.0
    diff *= 255.0 / full
    if scale < 1.0:
        k = max(1, int(math.ceil(1.0 / scale)))
        diff = cv2.dilate(diff, np.ones((k, k), np.uint8))  # keep single changed pixels visible
        diff = _shrink(diff, scale)
    # 0 levels -> no colour, 1 level -> faint, 32+ levels -> full scale (log-like)
    v = np.clip(np.log1p(diff) / np.log1p(32.0), 0.0, 1.0)
    colour = cv2.applyColorMap((v * 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    colour = cv2.cvtColor(colour, cv2.COLOR_BGR2RGB).astype(np.float32)
    grey = cv2.cvtColor(base, cv2.COLOR_RGB2GRAY).astype(np.float32)[:, :, None] * 0.45
    alpha = np.where(diff > 0, 0.35 + 0.65 * v, 0.0)[:, :, None]
    out = (grey * (1 - alpha) + colour * alpha).clip(0, 255).astype(np.uint8)
    small_mask = _shrink(mask.astype(np.uint8) * 255, scale) > 127
    contours, _ = cv2.findContours(small_mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 230, 255), 1, cv2.LINE_AA)
    for i, (x, y, _s) in enumerate(places, 1):
        cx, cy = int(x * scale), int(y * scale)
        cv2.circle(out, (cx, cy), 14, (255, 255, 255), 2, cv2.LINE_AA)
        cv2.putText(out, str(i), (cx - 6, cy + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def _crop_at(a: np.ndarray, x: int, y: int, side: int) -> tuple[np.ndarray, tuple[int, int]]:
    h, w = a.shape[:2]
    x0 = int(min(max(0, x - side // 2), max(0, w - side)))
    y0 = int(min(max(0, y - side // 2), max(0, h - side)))
    return a[y0 : y0 + side, x0 : x0 + side], (x0, y0)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#16181d;color:#e6e6e6}
main{max-width:1480px;margin:0 auto;padding:16px 24px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:24px 0 8px;border-bottom:1px solid #333;padding-bottom:4px}
.banner{padding:10px 14px;border-radius:6px;font-size:18px;font-weight:600}
.pass{background:#12381f;color:#7be495}.fail{background:#461717;color:#ff8a8a}
.unmeasured{background:#3d3413;color:#ffd66e}
.banner ul{margin:6px 0 0 0;font-weight:400;font-size:15px}
.cmp{position:relative;display:inline-block;max-width:100%;line-height:0;user-select:none}
.cmp img{max-width:100%;height:auto;display:block}
.cmp img.after{position:absolute;top:0;left:0;clip-path:inset(0 0 0 50%)}
.cmp .line{position:absolute;top:0;bottom:0;left:50%;width:2px;background:#fff;opacity:.8;pointer-events:none}
.controls{margin:8px 0;display:flex;gap:12px;align-items:center}
.controls input[type=range]{width:420px}
button{background:#2b3240;color:#eee;border:1px solid #445;border-radius:4px;padding:4px 10px;cursor:pointer}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #333;padding:4px 10px;text-align:left}
th{background:#222731}td.v-pass{color:#7be495}td.v-fail{color:#ff8a8a;font-weight:600}td.v-na{color:#999}
.crops{display:flex;flex-wrap:wrap;gap:18px}
.crop{background:#1e2129;padding:8px;border-radius:6px}
.crop .pair{display:flex;gap:4px}.crop img{image-rendering:pixelated;display:block}
.crop .cap{font-size:13px;margin-top:6px;color:#bbb}.crop .lbl{font-size:12px;color:#999;line-height:16px}
pre{background:#1e2129;padding:8px;border-radius:6px;overflow:auto;font-size:12px}
.muted{color:#999;font-size:13px}
"""

_JS = """
function setSplit(v){var a=document.getElementById('after');var l=document.getElementById('line');
a.style.clipPath='inset(0 0 0 '+v+'%)';l.style.left=v+'%';}
function toggleView(){var s=document.getElementById('split');s.value=(+s.value>50)?0:100;setSplit(s.value);}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items())
    return str(v)


_ROWS = [
    ("outside_changed_pixels", "Pixels changed beyond the blend band", lambda t: f"≤ {t.outside_changed_max}"),
    ("outside_max_diff", "Largest change beyond the band", None),
    ("seam_score", "Seam visibility (z vs. null placements)", lambda t: f"≤ {t.seam_max:g}"),
    ("seam_local_max", "Worst local seam score", lambda t: f"≤ {t.seam_local_max:g}"),
    ("detail_ratio", "Detail inside / ring", lambda t: f"{t.detail_min:g} – {t.detail_max:g}"),
    ("detail_ratio_original", "Detail inside / original inside", lambda t: f"{t.detail_min:g} – {t.detail_max:g}"),
    ("noise_ratio", "Noise inside / ring", lambda t: f"{t.noise_min:g} – {t.noise_max:g}"),
    ("noise_ratio_original", "Noise inside / original inside", lambda t: f"{t.noise_min:g} – {t.noise_max:g}"),
    ("colour_delta_e", "ΔE2000 inner vs outer side", lambda t: f"≤ {t.colour_delta_e_max:g}"),
    ("colour_delta_e_original", "ΔE2000 inner side vs original", lambda t: f"≤ {t.colour_delta_e_max:g}"),
    ("tone_step_levels", "Tone step along the outline (levels)", lambda t: f"≤ {t.tone_step_max:g}"),
    ("tone_step_worst", "Worst stretch of the outline (levels)", lambda t: f"≤ {t.tone_step_local_max:g}"),
    ("edge_step_max", "Straight edge added inside (levels)", lambda t: f"≤ max({t.edge_step_min:g}, {t.edge_step_factor:g} × surroundings)"),
    ("edge_break_max", "Texture break added inside", lambda t: f"≤ surroundings + {t.edge_break_margin:g}"),
    ("grid_lines", "Straight lines added inside (grid)", lambda t: f"< {t.grid_lines_min}"),
    ("global_delta_e", "Whole image: ΔE2000 shift", lambda t: f"≤ {t.global_delta_e_max:g}"),
    ("global_tone_levels", "Whole image: tone shift (levels)", lambda t: f"≤ {t.global_tone_max:g}"),
    ("global_detail_ratio", "Whole image: detail / original", lambda t: f"{t.detail_min:g} – {t.detail_max:g}"),
    ("global_noise_ratio", "Whole image: noise / original", lambda t: f"{t.noise_min:g} – {t.noise_max:g}"),
    ("brisque_inside", "BRISQUE inside (lower = more natural)", None),
    ("brisque_outside", "BRISQUE outside", None),
    ("brisque_delta", "BRISQUE inside − outside", None),
]
_CHECK_OF = {
    "detail_ratio_original": "detail_ratio",
    "noise_ratio_original": "noise_ratio",
    "colour_delta_e_original": "colour_delta_e",
}


def _metrics_table(rep: QualityReport) -> str:
    rows = []
    for key, label, thr in _ROWS:
        if key not in rep.metrics:
            continue
        check = rep.checks.get(_CHECK_OF.get(key, key), "")
        if key in _CHECK_OF and check:
            check = f"({check})"
        cls = {"pass": "v-pass", "fail": "v-fail"}.get(check.strip("()"), "v-na")
        rows.append(
            f"<tr><td>{html.escape(label)}</td><td><code>{key}</code></td><td>{html.escape(_fmt(rep.metrics[key]))}</td>"
            f"<td>{html.escape(thr(rep.thresholds) if thr else '')}</td><td class='{cls}'>{html.escape(check or 'info')}</td></tr>"
        )
    return (
        "<table><tr><th>metric</th><th>key</th><th>value</th><th>threshold</th><th>verdict</th></tr>"
        + "".join(rows)
        + "</table>"
    )


def _kv_table(d: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v) if not isinstance(v, (list, dict)) else json.dumps(v, default=str)[:2000])}</td></tr>"
        for k, v in d.items()
    )
    return f"<table>{rows}</table>"


def _info_html(info: dict[str, Any]) -> str:
    parts = []
    cards = info.get("model_card") or info.get("model_cards")
    if cards:
        parts.append("<h2>Model cards</h2>")
        for card in cards if isinstance(cards, list) else [cards]:
            if isinstance(card, dict):
                parts.append(_kv_table(card))
            else:
                parts.append(f"<pre>{html.escape(str(card))}</pre>")
    if info.get("timings"):
        parts.append("<h2>Timings (s)</h2>")
        t = info["timings"]
        parts.append(_kv_table(t) if isinstance(t, dict) else f"<pre>{html.escape(str(t))}</pre>")
    if info.get("engine_calls") is not None:
        parts.append("<h2>Engine calls</h2>")
        calls = info["engine_calls"]
        if isinstance(calls, list) and calls and isinstance(calls[0], dict):
            keys = list(dict.fromkeys(k for c in calls for k in c))
            head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(_fmt(c.get(k)))}</td>" for k in keys) + "</tr>" for c in calls
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            parts.append(f"<pre>{html.escape(json.dumps(calls, indent=1, default=str))}</pre>")
    cands = info.get("candidates")
    if cands:
        parts.append("<h2>Candidates</h2>")
        keys = ["index", "seed", "prompt", "status", "score", "reasons"]
        head = "".join(f"<th>{k}</th>" for k in keys)
        body = ""
        for c in cands:
            cells = []
            for k in keys:
                v = c.get(k)
                if isinstance(v, list):
                    v = "; ".join(map(str, v))
                cells.append(f"<td>{html.escape(_fmt(v))}</td>")
            body += "<tr>" + "".join(cells) + "</tr>"
        parts.append(f"<table><tr>{head}</tr>{body}</table>")
    rest = {k: v for k, v in info.items() if k not in {"model_card", "model_cards", "timings", "engine_calls", "candidates"}}
    if rest:
        parts.append("<h2>Other information</h2>")
        parts.append(f"<pre>{html.escape(json.dumps(rest, indent=1, default=str)[:20000])}</pre>")
    return "".join(parts)


def render_html(
    original: np.ndarray,
    edited: np.ndarray,
    report: QualityReport,
    mask: np.ndarray,
    *,
    info: dict[str, Any] | None = None,
    title: str = "crispedit quality report",
) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    h, w = original.shape[:2]
    scale = min(1.0, OVERVIEW_MAX / max(h, w))
    before8 = _to_rgb8(_shrink(original, scale))
    after8 = _to_rgb8(_shrink(edited, scale))
    crops_html = []
    # the named defects' places first (each with its kind), then the worst places along the seams
    places: list[tuple[int, int, Any]] = []
    for d in getattr(report, "defects", []):
        if d.x is not None and d.y is not None and all(abs(d.x - a) + abs(d.y - b) > CROP // 2 for a, b, _ in places):
            places.append((int(d.x), int(d.y), d.kind))
    for x, y, sc in report.worst_places:
        if all(abs(x - a) + abs(y - b) > CROP // 2 for a, b, _ in places):
            places.append((x, y, sc))
    places = places[:MAX_CROPS]
    heat = _heatmap(original, edited, mask, scale, after8, places)
    if not places:
        bb = M.mask_bbox(mask)
        if bb is not None:  # no seam measured: show the middle of the edit
            places = [((bb[0] + bb[2]) // 2, (bb[1] + bb[3]) // 2, float("nan"))]
    for i, (x, y, s) in enumerate(places, 1):
        co, (x0, y0) = _crop_at(original, x, y, CROP)
        ce, _ = _crop_at(edited, x, y, CROP)
        if isinstance(s, str):
            score = f" · defect: {html.escape(s)}"
        else:
            score = "" if not math.isfinite(s) else f" · local seam score {s:.1f}"
        crops_html.append(
            "<div class='crop'><div class='pair'>"
            f"<div><div class='lbl'>before</div><img src='{_data_uri(_to_rgb8(co), 'png')}' "
            f"width='{co.shape[1]}' height='{co.shape[0]}' alt='before {i}'></div>"
            f"<div><div class='lbl'>after</div><img src='{_data_uri(_to_rgb8(ce), 'png')}' "
            f"width='{ce.shape[1]}' height='{ce.shape[0]}' alt='after {i}'></div></div>"
            f"<div class='cap'>#{i} at x={x}, y={y} (crop from {x0},{y0}, 1:1){score}</div></div>"
        )
    verdict = report.verdict
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in report.reasons)
    reasons += "".join(f"<li>not measured: {html.escape(r)}</li>" for r in getattr(report, "unmeasured", []))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in report.notes)
    ow, oh = after8.shape[1], after8.shape[0]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body><main>
<h1>{html.escape(title)}</h1>
<div class="banner {verdict}">Verdict: {verdict.upper()}{f'<ul>{reasons}</ul>' if reasons else ''}</div>
<p class="muted">Image {w}×{h}, {original.dtype}, {1 if original.ndim == 2 else original.shape[2]} channel(s);
mask {report.mask_source} ({report.metrics.get('mask_pixels', 0)} px); blend band {report.band} px;
check took {report.timings.get('total', float('nan')):.2f} s.</p>
<h2>Before / after</h2>
<div class="controls"><span>before</span><input id="split" type="range" min="0" max="100" value="50"
 oninput="setSplit(this.value)" aria-label="before/after split"><span>after</span>
<button onclick="toggleView()">toggle</button></div>
<div class="cmp"><img class="before" src="{_data_uri(before8)}" width="{ow}" height="{oh}" alt="before">
<img class="after" id="after" src="{_data_uri(after8)}" width="{ow}" height="{oh}" alt="after">
<div class="line" id="line"></div></div>
<p class="muted">Overview at {scale:.0%} of full size. Left of the line: before; right: after.</p>
<h2>Worst places along the seam (1:1)</h2>
<div class="crops">{''.join(crops_html) or '<p class="muted">No edited area.</p>'}</div>
<h2>Change heatmap</h2>
<img src="{_data_uri(heat)}" width="{ow}" height="{oh}" style="max-width:100%;height:auto" alt="change heatmap">
<p class="muted">Colour: |after − before| (log scale, 32 levels and above = brightest); cyan: mask contour;
numbers: the crops above.</p>
<h2>Metrics</h2>
{_metrics_table(report)}
{f'<h2>Notes</h2><ul>{notes}</ul>' if notes else ''}
{_info_html(info) if info else ''}
<h2>Raw numbers</h2>
<pre>{html.escape(json.dumps(report.to_dict(), indent=1, default=str))}</pre>
</main><script>{_JS}</script></body></html>
"""


def write_report(
    original: np.ndarray,
    edited: np.ndarray,
    mask: np.ndarray | None = None,
    path: str | os.PathLike[str] = "report.html",
    *,
    info: dict[str, Any] | None = None,
    report: QualityReport | None = None,
    title: str = "crispedit quality report",
) -> Path:
    """Write one self-contained HTML report and return its path.

    Parameters
    ----------
    original, edited : ndarray
        The input and the edit (H x W [x C], uint8/uint16, same shape).
    mask : ndarray of bool, optional
        The edit's mask; found from the difference when None (as in :func:`assess`).
    path : path
        Where to write (parent folders are created; written atomically).
    info : dict, optional
        The edit's info dict: ``model_card``, ``timings``, ``engine_calls``, ``candidates`` are shown in
        their own sections, anything else as JSON.
    report : QualityReport, optional
        A report already computed for this pair (saves the check).
    """
    t0 = time.perf_counter()
    original = np.asarray(original)
    edited = np.asarray(edited)
    M.check_pair(original, edited)
    if report is None:
        report = assess(original, edited, mask, no_reference=True)
    if mask is None:
        mask = report.mask if report.mask is not None else M.changed_mask(original, edited)
    mask = np.asarray(mask).astype(bool)
    if mask.shape != original.shape[:2]:
        raise InputError("mask and image sizes differ", "give the mask the edit was made with")
    text = render_html(original, edited, report, mask, info=info, title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text.replace("</main>", f"<p class='muted'>Report written in "
                                             f"{time.perf_counter() - t0:.2f} s.</p></main>", 1))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
