"""Job tables for ``crispedit batch``: read JSONL / CSV / YAML, validate every row up front, plan the items.

A row is one item: the options of ``crispedit edit`` under their CLI names (``image``, one of ``mask`` / ``box`` /
``ellipse``, ``prompt`` (text or a list: prompt variants, one candidate each), ``engine``, ``model``, ``seed``,
``candidates``, ``strength``, ``steps``, ...). With ``--workflow FILE`` the columns are ``--set`` overrides
(``node.param``) of that workflow instead. Paths are relative to the table's folder.

Every row is checked (pydantic for types and ranges, then files, shapes and workflow validation) before any work
starts; all problems are reported together, each with its row number (1 = the first data row) and line.

Each item gets a key: a blake2b of the crispedit version, the input files' bytes (hashes, not paths) and the
parameters, the seed included. Its outputs live under that key, so a rerun finds what is done. A row without a
seed gets one derived with :class:`numpy.random.SeedSequence` from the batch seed and the item's content (not its
row position), so reordering the table keeps every item's seed; identical rows get successive spawn keys.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crispedit.errors import InputError, ProblemsError

#: Formats the edits can be written in (``--format``).
EDIT_FORMATS = ("png", "tif", "webp", "jpg")


class BatchTableError(ProblemsError):
    """A job table with problems; ``messages`` holds one line per problem, each naming its row."""

    fix_text = "fix the rows above; nothing was run"

    def __init__(self, messages: list[str], origin: str = "jobs"):
        super().__init__(messages, origin)


class EditRow(BaseModel):
    """One row of an edit table: the options of ``crispedit edit`` under their CLI names (``-`` as ``_``)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    image: str
    mask: Optional[str] = None
    box: Optional[str] = None
    ellipse: Optional[str] = None
    prompt: Optional[Union[str, list[str]]] = None
    engine: str = "classical"
    model: Optional[str] = None
    seed: Optional[int] = Field(None, ge=0)
    candidates: Optional[int] = Field(None, ge=1, le=64)
    strength: Optional[float] = Field(None, ge=0.0, le=1.0)
    steps: Optional[int] = Field(None, ge=1)
    guidance: Optional[float] = None
    scheduler: Optional[str] = None
    negative_prompt: Optional[str] = None
    detail: Optional[Literal["native", "fast"]] = None
    tile: Optional[int] = Field(None, ge=8)
    tile_overlap: Optional[int] = Field(None, ge=0)
    device: Optional[str] = None
    dtype: Optional[Literal["fp16", "bf16", "fp32"]] = None
    max_pixels: int = Field(300_000_000, ge=1)
    no_check: bool = False
    allow_pickle: bool = False
    allow_download: bool = False

    @field_validator("box", "ellipse", mode="before")
    @classmethod
    def _shape_text(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return ",".join(str(x) for x in v)
        return v

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompt_list(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().startswith("[") and v.strip().endswith("]"):
            try:
                return json.loads(v)
            except ValueError:
                pass
            import yaml  # a CSV cell written as in YAML: [a red car, a blue car]

            try:
                parsed = yaml.safe_load(v)
            except yaml.YAMLError:
                parsed = None
            if not isinstance(parsed, list) or any(isinstance(x, (list, dict)) for x in parsed):
                raise ValueError("prompt looks like a list but is not one: write [\"a\", \"b\"] or [a, b] (a "
                                 "prompt that is itself in brackets: [\"[...]\"])")
            return [str(p) for p in parsed]
        return v

    @model_validator(mode="after")
    def _one_area(self) -> EditRow:
        given = [n for n in ("mask", "box", "ellipse") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"give only one of {', '.join(given)}")
        if not given and self.engine == "classical":
            raise ValueError("no mask, box or ellipse: the classical engine only edits masked areas")
        if isinstance(self.prompt, list) and not [p for p in self.prompt if str(p).strip()]:
            raise ValueError("prompt list is empty")
        return self


EDIT_COLUMNS = tuple(EditRow.model_fields)


@dataclass
class Item:
    """One planned unit of work (plain data: it travels to worker processes and Ray tasks).

    ``spec`` holds what the worker needs: ``mode`` (``edit`` / ``workflow``), the edit keyword arguments or the
    workflow path and overrides, the output paths under ``outdir`` and the inputs' hashes.
    """

    row: int
    line: int
    key: str
    spec: dict[str, Any]
    resources: dict[str, Any] = field(default_factory=dict)
    #: Later rows identical to this one (same key: same inputs, parameters and seed): planned once, run once.
    duplicate_rows: list[int] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------------


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() == "")


def column_name(name: Any) -> str:
    """A header as a column name: edit options are matched case-insensitively, with ``-`` or spaces as ``_``
    (``Negative Prompt`` -> ``negative_prompt``); ``node.param`` overrides are kept as written (node names are
    case-sensitive)."""
    text = str(name).strip()
    if "." in text:
        return text
    return "_".join(text.lower().replace("-", " ").split())


def _decode(path: Path) -> str:
    """The table's text: UTF-8 (a BOM allowed), or UTF-16 / UTF-32 when a BOM says so (Excel's "Unicode text").

    Raises
    ------
    crispedit.errors.InputError
        Bytes that are not UTF-8 (e.g. a table saved as Windows-1252), with the line and byte named: guessing
        the encoding could silently change prompts and paths.
    """
    import codecs

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the job table {path}: {exc.strerror or exc}", "check the file") from None
    for bom, enc in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),  # noqa: B007 - used after the loop
                     (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            break
    else:
        enc = "utf-8"
    try:
        return data.decode(enc)
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line} is not {enc.upper().removesuffix('-SIG')} text (byte "
                         f"0x{data[exc.start]:02x})", "save the table as UTF-8 (Excel: 'CSV UTF-8')") from None


def read_table(path: Union[str, Path]) -> list[tuple[int, dict[str, Any]]]:
    """Rows of a JSONL (``.jsonl``/``.ndjson``), CSV (``.csv``/``.tsv``) or YAML (``.yaml``/``.yml``) table.

    Returns
    -------
    list of (line, row)
        ``line`` is the 1-based line of the row in the file (YAML: the row's position); empty cells are dropped.

    Raises
    ------
    crispedit.errors.InputError
        Missing file, unknown extension, or a file that does not parse (line named).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"job table not found: {p}", "give a .jsonl, .csv or .yaml file, one row per item")
    ext = p.suffix.lower()
    text = _decode(p)
    reader = _TABLE_READERS.get(ext)
    if reader is None:
        raise InputError(f"cannot read job table '{ext or p.name}'", "use a .jsonl, .csv or .yaml file")
    rows = reader(p, text)
    out = []
    for lineno, obj in rows:
        clean = {column_name(k): v for k, v in obj.items() if not _empty(v)}
        out.append((lineno, clean))
    if not out:
        raise InputError(f"{p}: the table has no rows", "add one row per item")
    return out


def _jsonl_rows(p: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows: list[tuple[int, dict[str, Any]]] = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{p}: line {i} is not JSON ({exc.msg})", "write one JSON object per line") from None
        if not isinstance(obj, dict):
            raise InputError(f"{p}: line {i} is not a JSON object", "write one {\"image\": ...} object per line")
        rows.append((i, obj))
    return rows


def _csv_rows(p: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text), delimiter="\t" if p.suffix.lower() == ".tsv" else ",")
    try:
        records = [(reader.line_num, rec) for rec in reader]
    except csv.Error as exc:
        raise InputError(f"{p}: line {reader.line_num} is not valid CSV ({exc})",
                         "check the quoting of that line (a cell over 128 KiB is refused)") from None
    rows: list[tuple[int, dict[str, Any]]] = []
    header: Optional[list[str]] = None
    for lineno, rec in records:
        if header is None:
            header = _csv_header(p, rec)
            continue
        if not any(c.strip() for c in rec):
            continue
        if len(rec) > len(header):
            raise InputError(f"{p}: line {lineno} has {len(rec)} cells but the header {len(header)}",
                             "quote cells that contain commas")
        rows.append((lineno, {h: c for h, c in zip(header, rec) if not _empty(c)}))
    return rows


def _csv_header(p: Path, rec: list[str]) -> list[str]:
    header = [h.strip() for h in rec]
    names = [column_name(h) for h in header if h]
    twice = sorted({h for h in names if names.count(h) > 1})
    if twice:
        raise InputError(f"{p}: column(s) {', '.join(twice)} appear more than once in the header",
                         "keep one column of each name")
    return header


def _yaml_rows(p: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    import yaml

    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise InputError(f"{p}: not valid YAML ({exc})", "write a list of mappings, one per item") from None
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        data = data["items"]
    if isinstance(data, dict):
        raise InputError(f"{p}: the top level is a mapping ({', '.join(map(str, list(data)[:4]))}), not a list "
                         "of rows", "start each row with `- ` (`- {image: a.jpg, box: ...}`), or list the rows "
                         "under `items:`")
    if not isinstance(data, list):
        raise InputError(f"{p}: expected a list of rows", "write `- {image: a.jpg, box: ...}` per item")
    rows: list[tuple[int, dict[str, Any]]] = []
    for i, obj in enumerate(data, 1):
        if not isinstance(obj, dict):
            raise InputError(f"{p}: row {i} is not a mapping", "write `- {image: a.jpg, box: ...}` per item")
        rows.append((i, obj))
    return rows


_TABLE_READERS: dict[str, Callable[[Path, str], list[tuple[int, dict[str, Any]]]]] = {
    ".jsonl": _jsonl_rows, ".ndjson": _jsonl_rows, ".csv": _csv_rows, ".tsv": _csv_rows,
    ".yaml": _yaml_rows, ".yml": _yaml_rows,
}


# ----------------------------------------------------------------------------------------------------------------
# keys, seeds, resources
# ----------------------------------------------------------------------------------------------------------------


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def digest(value: Any, size: int = 16) -> str:
    """blake2b (``size`` bytes, hex) of ``value``'s canonical JSON."""
    return hashlib.blake2b(canonical(value).encode(), digest_size=size).hexdigest()


def derive_seed(batch_seed: int, content: str, occurrence: int) -> int:
    """A seed for an item without one: ``SeedSequence(entropy=content hash, spawn_key=(batch_seed, occurrence))``.

    Returns an integer in [0, 2**32) (accepted by numpy, OpenCV and torch generators alike).
    """
    import numpy as np

    ss = np.random.SeedSequence(entropy=int(content, 16), spawn_key=(int(batch_seed), int(occurrence)))
    return int(ss.generate_state(1, dtype=np.uint32)[0])


def image_size(path: Union[str, Path]) -> Optional[tuple[int, int]]:
    """(width, height) as ``crispedit edit`` sees the image: from the file header (no decode), swapped when the
    EXIF orientation turns it by 90 degrees (5-8), as the loader applies it; None when unreadable."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
            return (h, w) if im.getexif().get(0x0112) in (5, 6, 7, 8) else (w, h)
    except Exception:  # noqa: BLE001 - a corrupt file fails later, inside its item, and is recorded there
        return None


def estimate_resources(size: Optional[tuple[int, int]], engine: str, device: Optional[str]) -> dict[str, Any]:
    """CPU, memory (bytes) and GPU one item needs, from the image size and the engine.

    Memory: a fixed base (interpreter, libraries) plus bytes per pixel, measured on 4K-8K classical edits (8K peak
    RSS 904 MB, docs/benchmarks.md) and doubled for SD engines, plus the SD1.5 weights and activations.
    """
    w, h = size or (4000, 3000)
    px = w * h
    if engine == "classical":
        mem = 400 * 2**20 + 32 * px
    else:
        mem = 6 * 2**30 + 64 * px
    gpus = 1 if engine != "classical" and (device or "auto") not in ("cpu",) else 0
    return {"num_cpus": 1, "memory": int(mem), "num_gpus": gpus, "pixels": px}


# ----------------------------------------------------------------------------------------------------------------
# planning
# ----------------------------------------------------------------------------------------------------------------


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def _file_ref(path: Path, outdir: Optional[Path] = None) -> dict[str, Any]:
    from crispedit.workflow.runner import file_hash

    st = path.stat()
    return {"path": str(path.resolve()), "blake2b": file_hash(path), "bytes": st.st_size}


def _pydantic_messages(exc: ValidationError, where: str) -> list[str]:
    from crispedit.workflow.types import did_you_mean

    msgs = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e.get("loc", ()) if not isinstance(x, int))
        msg = e.get("msg", "invalid")
        if e.get("type") == "extra_forbidden":
            msgs.append(f"{where}: unknown column '{loc}'{did_you_mean(loc, EDIT_COLUMNS)}")
        elif loc:
            msgs.append(f"{where}: column '{loc}': {msg.removeprefix('Value error, ')}")
        else:
            msgs.append(f"{where}: {msg.removeprefix('Value error, ')}")
    return msgs


def plan_items(jobs: Union[str, Path], outdir: Union[str, Path], *, workflow: Optional[Union[str, Path]] = None,
               batch_seed: int = 0, edit_format: str = "png") -> list[Item]:
    """Read and validate a job table and plan its items (keys, seeds, output paths, resources).

    Parameters
    ----------
    jobs : path of the JSONL / CSV / YAML table.
    outdir : the dataset folder the outputs go to (paths in the items are absolute).
    workflow : a workflow file whose ``--set`` overrides the table's columns are (``node.param``); None: edit rows.
    batch_seed : root of the seeds derived for rows without one.
    edit_format : extension of the edits (``png``, ``tif``, ``webp`` or ``jpg``).

    Returns
    -------
    list of Item
        In table order; a row identical to an earlier one (same key) is not planned again, its number is added to
        the earlier item's ``duplicate_rows``.

    Raises
    ------
    BatchTableError
        Every problem of every row, each with its row and line number.
    crispedit.errors.InputError
        An unreadable table or workflow file.
    """
    jobs = Path(jobs)
    outdir = Path(outdir).resolve()
    if edit_format not in EDIT_FORMATS:
        raise InputError(f"unknown --format '{edit_format}'", f"use one of: {', '.join(EDIT_FORMATS)}")
    rows = read_table(jobs)
    base = jobs.resolve().parent
    errors: list[str] = []
    planned: list[tuple[int, int, str, dict[str, Any], dict[str, Any]]] = []
    if workflow is not None:
        from crispedit.batch.flows import plan_workflow_rows

        planned = plan_workflow_rows(Path(workflow), rows, base, errors)
    else:
        for n, (line, raw) in enumerate(rows, 1):
            where = f"row {n} (line {line})"
            try:
                row = EditRow.model_validate(raw)
            except ValidationError as exc:
                errors.extend(_pydantic_messages(exc, where))
                continue
            plan = _plan_edit_row(row, base, where, errors)
            if plan is not None:
                planned.append((n, line, *plan))
    if errors:
        raise BatchTableError(errors, str(jobs))
    items: list[Item] = []
    seen: dict[str, int] = {}
    occurrences: dict[str, int] = {}
    for n, line, content, spec, res in planned:
        if spec.get("seed_source") == "derived":
            occ = occurrences.get(content, 0)
            occurrences[content] = occ + 1
            spec = _with_seed(spec, derive_seed(batch_seed, content, occ))
        key = digest({"content": content, "seeds": spec.get("seeds"), "format": edit_format}, 16)
        if key in seen:
            items[seen[key]].duplicate_rows.append(n)
            continue
        seen[key] = len(items)
        spec = dict(spec, key=key, row=n, outdir=str(outdir), format=edit_format,
                    edit=str(outdir / "edits" / f"{key}.{edit_format}"),
                    mask_out=str(outdir / "masks" / f"{key}.png"),
                    record=str(outdir / "records" / f"{key}.json"))
        items.append(Item(n, line, key, spec, res))
    return items


def _with_seed(spec: dict[str, Any], seed: int) -> dict[str, Any]:
    spec = dict(spec)
    if spec["mode"] == "edit":
        spec["args"] = dict(spec["args"], seed=seed)
        spec["seeds"] = {"edit": seed}
    else:
        derived = {node: derive_seed(seed, digest(node), 0) for node in spec["seed_nodes"]}
        spec["seeds"] = {**spec["seeds"], **derived}
        spec["overrides"] = list(spec["overrides"]) + [f"{n}.seed={s}" for n, s in derived.items()]
    return spec


def _plan_edit_row(row: EditRow, base: Path, where: str, errors: list[str]
                   ) -> Optional[tuple[str, dict[str, Any], dict[str, Any]]]:
    problems: list[str] = []
    image = _resolve(base, row.image)
    if not image.is_file():
        problems.append(f"{where}: image not found: {image}")
    mask = None
    if row.mask is not None:
        mask = _resolve(base, row.mask)
        if not mask.is_file():
            problems.append(f"{where}: mask not found: {mask}")
    args = _edit_args(row, base)
    size = _check_shapes(args, image, where, problems)
    _check_engine(row.engine, where, problems)
    if not problems:
        _check_edit_workflow(image, mask, args, base, where, problems)
    if problems:
        errors.extend(problems)
        return None
    content, spec = _edit_spec(row, image, mask, args, size)
    return content, spec, estimate_resources(size, row.engine, row.device)


def _edit_args(row: EditRow, base: Path) -> dict[str, Any]:
    """The row's columns as ``builtin.edit_workflow`` keywords: prompt variants spread, a model path resolved."""
    args = row.model_dump(exclude={"image", "mask", "prompt"})
    if isinstance(row.prompt, list):
        prompts = [str(p) for p in row.prompt if str(p).strip()]
        args["prompt"] = prompts[0]
        args["prompt_variants"] = prompts
        args["candidates"] = row.candidates or len(prompts)
    else:
        args["prompt"] = row.prompt
    if row.model and (row.model.startswith((".", "/", "~")) or _resolve(base, row.model).exists()):
        args["model"] = str(_resolve(base, row.model))
    return args


def _check_shapes(args: dict[str, Any], image: Path, where: str,
                  problems: list[str]) -> Optional[tuple[int, int]]:
    """Normalise the box / ellipse columns in ``args`` and check them against the image size (returned)."""
    from crispedit.workflow import builtin

    for shape in ("box", "ellipse"):
        if args.get(shape) is not None:
            try:
                args[shape] = ",".join(str(v) for v in builtin._box(args[shape], f"--{shape}"))
            except InputError as exc:
                problems.append(f"{where}: {exc}")
    size = image_size(image) if image.is_file() else None
    if size is not None:
        from crispedit.mask import parse_box

        for shape in ("box", "ellipse"):
            if args.get(shape) is not None and not problems:
                try:
                    parse_box(args[shape], size)
                except InputError as exc:
                    problems.append(f"{where}: {shape}: {exc.problem}")
    return size


def _check_engine(engine: str, where: str, problems: list[str]) -> None:
    if engine in ("classical", "sd15"):  # the built-in names need no import (sd15 would pull in torch)
        return
    from crispedit.engines.base import engine_names
    from crispedit.workflow.types import did_you_mean

    names = engine_names()
    if engine not in names:
        problems.append(f"{where}: unknown engine '{engine}'{did_you_mean(engine, names)} "
                        f"(choose one of: {', '.join(names)})")


def _check_edit_workflow(image: Path, mask: Optional[Path], args: dict[str, Any], base: Path, where: str,
                         problems: list[str]) -> None:
    """The same checks `crispedit edit` makes, on the workflow it would run."""
    from crispedit.workflow import builtin
    from crispedit.workflow.schema import WorkflowError, load_workflow

    try:
        load_workflow(builtin.edit_workflow(image=image, output=base / "x.png", mask=mask, **args), base_dir=base)
    except WorkflowError as exc:
        problems.extend(f"{where}: {m}" for m in exc.messages)
    except InputError as exc:
        problems.append(f"{where}: {exc}")


def _edit_spec(row: EditRow, image: Path, mask: Optional[Path], args: dict[str, Any],
               size: Optional[tuple[int, int]]) -> tuple[str, dict[str, Any]]:
    """(content key, item spec) of a valid edit row."""
    inputs = {"image": _file_ref(image)}
    if mask is not None:
        inputs["mask"] = _file_ref(mask)
    params = {k: v for k, v in args.items() if v is not None and v is not False}
    if "model" in params and Path(params["model"]).exists():
        st = Path(params["model"]).stat()
        params["model"] = {"path": Path(params["model"]).name, "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
    content = digest({"crispedit": _version(), "mode": "edit",
                      "inputs": {k: v["blake2b"] for k, v in inputs.items()},
                      "params": {k: v for k, v in params.items() if k != "seed"}}, 16)
    spec: dict[str, Any] = {"mode": "edit", "args": dict(args, image=str(image), mask=None if mask is None
                                                          else str(mask)),
                            "inputs": inputs, "engine": row.engine, "model": args.get("model"),
                            "seed_source": "row" if row.seed is not None else "derived",
                            "seeds": {"edit": row.seed}, "size": list(size) if size else None}
    return content, spec


def _version() -> str:
    from crispedit.workflow.runner import _version as v

    return v()
