# Two set-up commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
IMAGE  ?= examples/photos/seeding-by-clemens-engelhardt.jpg
MASK   ?=
OUT    ?= out/demo-edit.png

.PHONY: demo test install clean bench

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

bench: $(STAMP)
	$(PY) bench/zoom.py
	$(PY) bench/speed.py

clean:
	rm -rf $(VENV) out .pytest_cache
