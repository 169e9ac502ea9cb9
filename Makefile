# wwfast: each stage is a target; stages skip by themselves when their outputs are current.
PY    ?= .venv/bin/python
# The same directories `wwfast` reads: $WWFAST_CONF / $WWFAST_STATE, else conf and var.
CONF  ?= $(or $(WWFAST_CONF),conf)
STATE ?= $(or $(WWFAST_STATE),var)
ARGS  = --conf $(CONF) --state $(STATE)

.PHONY: setup define build compress all serve test bench demo demo-debian clean

setup:
	scripts/setup.sh

# ALLOW_SHRINK=1: let define drop every node, or more than half of them (it refuses by default).
define:
	$(PY) -m stages.define $(ARGS) $(if $(ALLOW_SHRINK),--allow-shrink)

# `define` is also a make directive: as a prerequisite it is spelled through a variable.
DEFINE := define
build: $(DEFINE)
	$(PY) -m stages.build $(ARGS)

compress: build
	$(PY) -m stages.compress $(ARGS)

# One `make all` at a time (cron and a person at once): the second waits for the first, so whole
# runs never interleave; each stage also holds its own lock. NO_WAIT=1: exit 75 at once instead.
all:
	@mkdir -p $(STATE)
	@flock $(if $(NO_WAIT),-n -E 75) $(STATE)/.make-all.lock $(MAKE) --no-print-directory compress \
	  || { rc=$$?; [ $$rc = 75 ] && echo "make all: another run holds $(STATE)/.make-all.lock; exiting (NO_WAIT)" >&2; exit $$rc; }

serve:
	$(PY) -m stages.serve $(ARGS)

# The whole suite with the compiled Cython modules (a test fails if they did not load), then again
# with WWFAST_PURE=1 forcing their pure-Python twins for the tests that exercise them (marker `twin`:
# cpio, TFTP, the compiled-module check, one QEMU boot each way).
test:
	$(PY) -m pytest -q -ra --timeout=900
	WWFAST_PURE=1 $(PY) -m pytest -q -ra --timeout=900 -m twin

# Every benchmark (peer measured in the same run, results in benchmarks/results/*.json), then one table
# of them all in benchmarks/results/summary.md. QUICK=1: small sizes, one run each (a few minutes).
bench:
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(PY) -m pip install -q -e '.[bench]'
	@rc=0; for b in benchmarks/bench_*.py benchmarks/bootstorm.py; do \
	  echo "== $$b"; $(PY) $$b $(if $(QUICK),--quick) || rc=1; done; \
	$(PY) benchmarks/harness.py summary; exit $$rc

demo: setup
	$(PY) scripts/demo.py $(ARGS)

# Two Debian 12 systemd nodes (image built once by mmdebstrap, cached in ~/.cache/wwfast/debian).
demo-debian: setup
	$(PY) scripts/demo_debian.py --state $(STATE)

clean:
	rm -rf $(STATE) build wwfast/_*.c wwfast/_*.so
