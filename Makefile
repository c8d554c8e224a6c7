# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
IMAGE  ?= examples/photos/seeding-by-clemens-engelhardt.jpg
MASK   ?=
OUT    ?= out/demo-edit.png

.PHONY: demo test test-fast lint install clean bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --image "$(IMAGE)" $(if $(MASK),--mask "$(MASK)") --out "$(OUT)"

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile

test-fast: $(STAMP)  # everything but the tests marked slow (CI runs them all through `make test`)
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow"

# ruff over the whole tree; mypy over the typed core (the rest is typed but not yet clean under mypy: issue 12)
MYPY_CORE := src/crispedit/errors.py src/crispedit/options.py src/crispedit/mask.py src/crispedit/regions.py src/crispedit/engines/base.py \
             src/crispedit/server/security.py src/crispedit/io src/crispedit/jpeg_lossless.py src/crispedit/workflow \
             src/crispedit/batch src/crispedit/geometry.py src/crispedit/tiling.py src/crispedit/membrane.py src/crispedit/arrays.py
# lint-imports: the layering of the rooms ([tool.importlinter] in pyproject.toml, docs/architecture.md)
lint: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m mypy $(MYPY_CORE)
	$(VENV)/bin/lint-imports

bench: $(STAMP)
	$(PY) bench/zoom.py
	$(PY) bench/speed.py

clean:
	rm -rf $(VENV) out .pytest_cache
