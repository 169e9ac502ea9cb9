# wwfast: each stage is a target; stages skip by themselves when their outputs are current.
PY    ?= .venv/bin/python
CONF  ?= conf
STATE ?= var
ARGS  = --conf $(CONF) --state $(STATE)

.PHONY: setup define build compress publish all serve test test-pure bench demo clean

setup:
	scripts/setup.sh

define:
	$(PY) -m stages.define $(ARGS)

# `define` is also a make directive: as a prerequisite it is spelled through a variable.
DEFINE := define
build: $(DEFINE)
	$(PY) -m stages.build $(ARGS)

compress: build
	$(PY) -m stages.compress $(ARGS)

all: compress

serve:
	$(PY) -m stages.serve $(ARGS)

# Both implementations: the suite runs the compiled and pure twins side by side (parametrised).
test:
	$(PY) -m pytest -q -ra --timeout=900

bench:
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

demo: setup
	$(PY) scripts/demo.py $(ARGS)

clean:
	rm -rf $(STATE) build wwfast/_*.c wwfast/_*.so
