"""Convert the BRISQUE model of the ``brisque`` wheel (Apache-2.0) once into ``src/crispedit/data/brisque_live.npz``.

The wheel ships the fitted epsilon-SVR as libsvm text (``svm.txt``) and the feature scaling as a Python pickle
(``normalize.pickle``). crispedit never loads a pickle: this script reads the pickle's opcodes with
:mod:`pickletools` (a disassembler: nothing is executed) and keeps only its float lists. The result is a plain
``.npz`` read with ``numpy.load(..., allow_pickle=False)``.

Usage: ``python bench/brisque_model.py [MODEL_DIR]`` (default: the installed ``brisque`` package's models/).
"""

from __future__ import annotations

import importlib.util
import pickletools
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "crispedit" / "data" / "brisque_live.npz"


def _scaling(path: Path) -> dict[str, list[float]]:
    """The ``{'min_': [...], 'max_': [...]}`` floats of the pickle, read from its opcodes without unpickling."""
    out: dict[str, list[float]] = {}
    key = None
    for op, arg, _ in pickletools.genops(path.read_bytes()):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            key = str(arg)
            out[key] = []
        elif op.name in ("BINFLOAT", "FLOAT") and key is not None:
            out[key].append(float(arg))
    return out


def main() -> int:
    if len(sys.argv) > 1:
        d = Path(sys.argv[1])
    else:
        spec = importlib.util.find_spec("brisque")
        if spec is None or not spec.submodule_search_locations:
            print("pip install --no-deps brisque, or pass the models folder", file=sys.stderr)
            return 2
        d = Path(list(spec.submodule_search_locations)[0]) / "models"
    header: dict[str, str] = {}
    coefs, svs = [], []
    with open(d / "svm.txt") as fh:
        for line in fh:
            line = line.strip()
            if line == "SV":
                break
            k, _, v = line.partition(" ")
            header[k] = v
        for line in fh:
            parts = line.split()
            if not parts:
                continue
            coefs.append(float(parts[0]))
            row = np.zeros(36)
            for tok in parts[1:]:
                i, _, v = tok.partition(":")
                row[int(i) - 1] = float(v)
            svs.append(row)
    assert header["svm_type"] == "epsilon_svr" and header["kernel_type"] == "rbf", header
    scale = _scaling(d / "normalize.pickle")
    assert len(scale["min_"]) == 36 and len(scale["max_"]) == 36, {k: len(v) for k, v in scale.items()}
    np.savez_compressed(OUT, gamma=np.float64(header["gamma"]), rho=np.float64(header["rho"].split()[0]),
                        coef=np.array(coefs), sv=np.array(svs), min=np.array(scale["min_"]),
                        max=np.array(scale["max_"]))
    print(f"wrote {OUT} ({len(coefs)} support vectors)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
