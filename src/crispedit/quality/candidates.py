"""Several candidate edits, a judge, and the rule that keeps one (as SAGI keeps only inpaintings its judge
cannot tell from real).

- :class:`Judge`: the protocol, ``score(original, edited, mask) -> (ok, score, reasons)``; **higher score is
  better**; ``ok`` False rejects the candidate.
- :class:`MetricJudge`: the built-in judge, on :func:`crispedit.quality.verdict.assess`. ``ok`` = the gate's
  verdict; ``score = 1 / (1 + deviation)`` in (0, 1], where ``deviation`` adds each metric's distance from
  "indistinguishable", in units of its threshold (see :func:`deviation`). 1.0 = a perfect, invisible edit.
- :class:`VLMJudge`: a vision-language model (transformers, the user's weights) asked SAGI's question: shown
  the original and the edit in both orders, can it tell which one was edited?
- :func:`select_best`: judge every candidate, reject those that fail, keep the highest score among the rest
  (ties: the earlier candidate). If every candidate fails, the highest score is still returned, marked
  ``passed: False`` with the reason, so the caller can decide.
- :func:`edit_candidates`: make N edits (seeds: children of ``SeedSequence(seed)``; prompt variants in turn) and
  select.

>>> import numpy as np
>>> from crispedit.quality.defects import photo_like, ellipse_mask, clean_edit, tone_step
>>> img = photo_like(256, 256, seed=5); m = ellipse_mask(256, 256, 128, 128, 60, 50)
>>> best, records = select_best(img, [(tone_step(img, m, 24), {}), (clean_edit(img, m), {})], m, MetricJudge())
>>> best, [r["status"] for r in records]
(1, ['rejected', 'kept'])
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from crispedit.errors import InputError, ModelError
from crispedit.quality.verdict import DEFAULT_THRESHOLDS, QualityReport, Thresholds, assess

__all__ = [
    "Judge",
    "MetricJudge",
    "VLMJudge",
    "deviation",
    "select_best",
    "edit_candidates",
    "load_prompt_variants",
]


@runtime_checkable
class Judge(Protocol):
    """Decides whether an edit is acceptable and how good it is (higher score = better)."""

    def score(
        self, original: np.ndarray, edited: np.ndarray, mask: np.ndarray | None
    ) -> tuple[bool, float, list[str]]: ...


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def deviation(report: QualityReport) -> float:
    """How far an edit is from indistinguishable, each metric in units of its threshold, summed.

    - seam: ``max(0, seam_score) / seam_max``;
    - colour: ``min(colour_delta_e, colour_delta_e_original) / colour_delta_e_max``;
    - detail, noise: ``|log r| / |log(limit)|`` for the ratio ``r`` (vs. the ring or vs. the original inside,
      whichever is closer to 1) and the limit on its side (``detail_min`` below 1, ``detail_max`` above);
    - outside identity: +1 per changed pixel beyond the band, capped at 10.

    A metric that could not be measured adds 0. An edit that passes every check scores at most about 4.
    """
    m, t = report.metrics, report.thresholds
    dev = 0.0
    if _finite(m.get("seam_score")):
        dev += max(0.0, m["seam_score"]) / t.seam_max
    cols = [m.get(k) for k in ("colour_delta_e", "colour_delta_e_original") if _finite(m.get(k))]
    if cols:
        dev += min(cols) / t.colour_delta_e_max
    for key, lo, hi in (("detail_ratio", t.detail_min, t.detail_max), ("noise_ratio", t.noise_min, t.noise_max)):
        vals = [m.get(k) for k in (key, key + "_original") if _finite(m.get(k)) and m.get(k) > 0]
        if vals:
            r = min(vals, key=lambda v: abs(math.log(v)))
            lim = lo if r < 1 else hi
            dev += abs(math.log(r)) / max(abs(math.log(lim)), 1e-6)
    dev += min(10.0, float(m.get("outside_changed_pixels", 0) or 0))
    return dev


class MetricJudge:
    """The built-in judge: the quality gate's verdict and ``score = 1 / (1 + deviation(report))``.

    The last report is kept in ``last_report`` (``select_best`` copies its key numbers into the records).
    """

    def __init__(self, thresholds: Thresholds | None = None, *, band: int | None = None):
        self.thresholds = thresholds or DEFAULT_THRESHOLDS
        self.band = band
        self.last_report: QualityReport | None = None

    def score(self, original: np.ndarray, edited: np.ndarray, mask: np.ndarray | None) -> tuple[bool, float, list[str]]:
        rep = assess(original, edited, mask, band=self.band, thresholds=self.thresholds)
        self.last_report = rep
        return rep.passed, 1.0 / (1.0 + deviation(rep)), list(rep.reasons)


class VLMJudge:
    """A vision-language model as judge (SAGI's realism check), with the user's own weights.

    ``model_path`` is a local folder with a transformers "image-text-to-text" model (e.g. a LLaVA- or
    Qwen-VL-style checkpoint). The judge shows the model the crop around the edit from the original and from
    the edit, in both orders, and asks which one was edited. ``ok`` is True when the model cannot tell (its two
    answers disagree, or it points at the original); ``score`` is the share of the two answers that did not
    find the edit (0, 0.5 or 1). Nothing is downloaded: a missing package or missing weights raise
    :class:`~crispedit.errors.ModelError` when the judge is made.
    """

    QUESTION = (
        "Image 1 and image 2 show the same scene; one of them has been edited by an AI model. "
        "Which one is edited? Answer with the single digit 1 or 2."
    )

    def __init__(self, model_path: str | Path, *, device: str | None = None, max_side: int = 768):
        try:
            import transformers  # noqa: F401
        except ImportError as exc:
            raise ModelError(
                "the VLM judge needs the 'transformers' package, which is not installed",
                "pip install transformers torch, or use the built-in metric judge",
            ) from exc
        path = Path(model_path).expanduser()
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(
                f"no transformers model found at {path} (a folder with config.json and weights is needed)",
                "download a vision-language model to a local folder and pass that folder",
            )
        weights = [p for ext in ("*.safetensors", "*.bin") for p in path.glob(ext)]
        if not weights:
            raise ModelError(f"{path} has a config.json but no weights (*.safetensors / *.bin)",
                             "finish downloading the model into that folder")
        self.model_path = path
        self.device = device
        self.max_side = max_side
        self._pipe: Any = None

    def _pipeline(self) -> Any:
        if self._pipe is None:
            from transformers import pipeline

            try:
                self._pipe = pipeline("image-text-to-text", model=str(self.model_path), device=self.device)
            except Exception as exc:  # noqa: BLE001 - any loader failure is a model problem for the user
                raise ModelError(f"could not load the VLM judge from {self.model_path}: {exc}",
                                 "check that the folder holds an image-text-to-text model") from exc
        return self._pipe

    def _crop(self, a: np.ndarray, mask: np.ndarray | None):
        from PIL import Image

        from crispedit.quality.report import _to_rgb8

        if mask is not None and mask.any():
            ys, xs = np.nonzero(mask)
            pad = int(0.5 * max(ys.max() - ys.min(), xs.max() - xs.min())) + 32
            y0, y1 = max(0, ys.min() - pad), min(a.shape[0], ys.max() + pad)
            x0, x1 = max(0, xs.min() - pad), min(a.shape[1], xs.max() + pad)
            a = a[y0:y1, x0:x1]
        im = Image.fromarray(_to_rgb8(a))
        im.thumbnail((self.max_side, self.max_side))
        return im

    def _ask(self, first: Any, second: Any) -> str:
        pipe = self._pipeline()
        messages = [{
            "role": "user",
            "content": [
                {"type": "image", "image": first},
                {"type": "image", "image": second},
                {"type": "text", "text": self.QUESTION},
            ],
        }]
        out = pipe(text=messages, max_new_tokens=4)
        text = out[0]["generated_text"] if isinstance(out, list) else out
        if isinstance(text, list):  # chat format: the last message is the answer
            text = text[-1].get("content", "") if text and isinstance(text[-1], dict) else str(text)
        digits = [c for c in str(text) if c in "12"]
        return digits[-1] if digits else "?"

    def score(self, original: np.ndarray, edited: np.ndarray, mask: np.ndarray | None) -> tuple[bool, float, list[str]]:
        o, e = self._crop(original, mask), self._crop(edited, mask)
        a1 = self._ask(o, e)  # edit is image 2
        a2 = self._ask(e, o)  # edit is image 1
        found = int(a1 == "2") + int(a2 == "1")
        ok = found < 2
        reasons = [] if ok else ["the VLM judge told the edit from the original in both orders"]
        return ok, 1.0 - found / 2.0, reasons


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    arr = getattr(x, "array", None)
    if isinstance(arr, np.ndarray):
        return arr
    img = getattr(x, "image", None)
    if img is not None:
        return np.asarray(img)
    return np.asarray(x)


def _comparable(original: np.ndarray, edited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bring an edit returned in another depth or channel count to the original's, for judging only."""
    if edited.dtype != original.dtype:
        if original.dtype == np.uint16 and edited.dtype == np.uint8:
            original = (original >> 8).astype(np.uint8)
        elif original.dtype == np.uint8 and edited.dtype == np.uint16:
            edited = (edited >> 8).astype(np.uint8)
    if original.ndim != edited.ndim or (original.ndim == 3 and original.shape[2] != edited.shape[2]):
        o = original if original.ndim == 3 else original[:, :, None]
        e = edited if edited.ndim == 3 else edited[:, :, None]
        c = min(o.shape[2], e.shape[2])
        original, edited = np.ascontiguousarray(o[:, :, :c]), np.ascontiguousarray(e[:, :, :c])
    return original, edited


def select_best(
    original: np.ndarray,
    candidates: Sequence[tuple[Any, dict[str, Any]]],
    mask: np.ndarray | None,
    judge: Judge | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    """Judge each ``(edited, meta)`` candidate and pick one.

    Returns ``(best_index, records)``. Each record holds the candidate's ``meta`` plus ``index``, ``passed``,
    ``score``, ``reasons``, ``status`` (``'kept'`` for the chosen one, ``'passed'`` for one that passed but scored
    lower, ``'rejected'`` for one the judge failed) and ``why`` (one sentence). Rule: the highest score among
    the candidates that pass; ties go to the earlier candidate; if none passes, the highest score overall,
    with ``passed: False``.
    """
    if not candidates:
        raise InputError("no candidates to choose from", "make at least one edit (--candidates N with N >= 1)")
    judge = judge or MetricJudge()
    original = np.asarray(original)
    records: list[dict[str, Any]] = []
    for i, (cand, meta) in enumerate(candidates):
        o, e = _comparable(original, _as_array(cand))
        t = time.perf_counter()
        ok, score, reasons = judge.score(o, e, mask)
        rec: dict[str, Any] = dict(meta or {})
        rec.update(index=i, passed=bool(ok), score=float(score), reasons=list(reasons),
                   judge_seconds=round(time.perf_counter() - t, 3))
        rep = getattr(judge, "last_report", None)
        if isinstance(rep, QualityReport):
            d = rep.to_dict()
            rec["metrics"] = {k: d.get(k) for k in ("seam_score", "detail_ratio", "noise_ratio", "colour_delta_e",
                                                    "colour_delta_e_original", "outside_changed_pixels")}
        records.append(rec)
    passing = [r for r in records if r["passed"]]
    pool = passing or records
    best = max(pool, key=lambda r: (r["score"], -r["index"]))["index"]
    for r in records:
        if r["index"] == best:
            r["status"] = "kept"
            if r["passed"]:
                r["why"] = f"highest score ({r['score']:.3f}) of {len(passing)} passing candidate(s)"
            else:
                r["why"] = (f"no candidate passed the gate; kept the highest score ({r['score']:.3f}): "
                            + "; ".join(r["reasons"]))
        elif r["passed"]:
            r["status"] = "passed"
            r["why"] = f"passed but scored {r['score']:.3f} < {records[best]['score']:.3f}"
        else:
            r["status"] = "rejected"
            r["why"] = "rejected: " + ("; ".join(r["reasons"]) or "the judge failed it")
    return best, records


def load_prompt_variants(path: str | Path) -> list[str]:
    """Prompt variants from a text file: one per line; blank lines and lines starting with '#' are skipped."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"prompt variants file not found: {p}", "give a text file with one prompt per line")
    variants = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines()]
    variants = [v for v in variants if v and not v.startswith("#")]
    if not variants:
        raise InputError(f"{p} holds no prompts", "write one prompt per line")
    return variants


def edit_candidates(
    image: Any,
    mask: Any,
    n: int,
    *,
    prompt: str | None = None,
    prompt_variants: list[str] | None = None,
    edit_fn: Callable[..., Any] | None = None,
    judge: Judge | None = None,
    seed: int = 0,
    **edit_options: Any,
) -> tuple[Any, list[dict[str, Any]]]:
    """Make ``n`` edits and keep the best by :func:`select_best`.

    Candidate ``i`` is ``edit_fn(image, mask, prompt=p_i, seed=s_i, **edit_options)`` with ``s_i`` child ``i`` of
    ``numpy.random.SeedSequence(seed)`` (:func:`crispedit.options.spawn_seeds`, recorded as each record's
    ``seed``; independent of the seeds derived inside each edit, unlike ``seed + i``) and ``p_i`` the
    ``i``-th prompt variant in turn (``prompt`` when there are none). ``edit_fn`` defaults to
    :func:`crispedit.edit` and must return an object with ``.image`` (PIL) and ``.info`` (dict); ``.array`` is
    used when present (it keeps 16-bit depth). The kept result's ``info`` gets ``candidates`` (the records)
    and ``candidate_index``. Returns ``(best_result, records)``.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"the number of candidates must be at least 1, got {n!r}", "pass --candidates N with N >= 1")
    if edit_fn is None:
        from crispedit import edit as edit_fn  # lazy: the harness pulls in the engines
    from crispedit.io import load_image

    original = image if isinstance(image, np.ndarray) else _as_array(image)
    if not isinstance(original, np.ndarray) or original.dtype == object or original.ndim < 2:
        original = load_image(image).array
    h, w = original.shape[:2]
    mask_arr = None
    if mask is not None:
        if isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == (h, w):
            mask_arr = mask
        else:
            from crispedit.mask import load_mask

            mask_arr = load_mask(mask, size=(w, h))
    from crispedit.options import spawn_seeds

    variants = list(prompt_variants or [])
    seeds = spawn_seeds(seed, int(n))
    results, cands = [], []
    for i in range(int(n)):
        p = variants[i % len(variants)] if variants else prompt
        s = seeds[i]
        t = time.perf_counter()
        res = edit_fn(image, mask, prompt=p, seed=s, **edit_options)
        results.append(res)
        cands.append((res, {"seed": s, "prompt": p, "edit_seconds": round(time.perf_counter() - t, 3)}))
    best, records = select_best(original, cands, mask_arr, judge)
    kept = results[best]
    info = getattr(kept, "info", None)
    if isinstance(info, dict):
        info["candidates"] = records
        info["candidate_index"] = best
    return kept, records
