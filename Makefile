# Every target creates .venv on first use; torch is pinned first so pip takes the CPU wheel.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean chromium postgres fuzz

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test,hf,onnx,hf-fixtures,compress,search]"
	touch $(STAMP)

# The main job on embedded data: ViT and nine efficient variants, 3 seeds each (side by side on
# the cores), the same budget per seed, on digits. Three seeds of all fifteen default models do
# not fit six minutes on a 2-core CPU at a budget that trains them, so the demo keeps one model
# per mixer family and leaves out the five that repeat a family already in (Swin window and
# MAXIM ~ local windows, SLA ~ linear + local, sliced ~ grouped local) or only pay on long
# sequences (probsparse, at 17 tokens). `anyformer compare --task digits --seeds 3` runs all.
DEMO_MODELS := vit,vit-gap,vit+fnet,vit-gap+gfnet,vit+fedformer,vit+linformer,vit-gap+activator,vit+performer,vit+linear,vit+local

demo: $(STAMP)
	$(VENV)/bin/anyformer compare --task digits --models $(DEMO_MODELS) --seeds 3 --budget 8s --set dim=64 --set depth=2 --out runs/demo

# The report's browser test drives Debian's chromium through playwright (never a browser download).
# CI runs as root on a fresh Debian machine: install it there, and fail if it cannot be had (the test
# itself fails under CI without it). Elsewhere, without root, say so: the test then skips, with the reason.
CHROMIUM := /usr/bin/chromium

chromium:
	@if [ ! -x $(CHROMIUM) ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y chromium; \
	  elif [ -n "$$CI" ]; then sudo apt-get update && sudo apt-get install -y chromium; \
	  else echo "note: $(CHROMIUM) is absent (as root: apt-get install -y chromium); the browser test will skip"; fi; \
	fi

# The distributed search's tests start a throwaway PostgreSQL server of their own (tests/search/
# conftest.py: initdb into a temp dir, a free loopback port), so only the binaries are needed. As
# with chromium: install them on CI's fresh root Debian, and fail there if they cannot be had;
# elsewhere, without root, say so: those tests then skip, with the reason. Debian's package may
# start its own cluster on 5432; the tests never use it.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y postgresql; \
	  elif [ -n "$$CI" ]; then sudo apt-get update && sudo apt-get install -y postgresql; \
	  else echo "note: PostgreSQL is absent (as root: apt-get install -y postgresql); the PostgreSQL tests will skip"; fi; \
	fi

# lint-imports checks the layer contracts in pyproject.toml (DESIGN.md's dependency arrows).
test: $(STAMP) chromium postgres
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# The long property-based fuzz campaign: 2,000 random configs drawn from the registry (the
# strategy of tests/test_fuzz.py, which CI runs on a small fixed budget), each in one of 2
# worker processes with a 60 s limit; prints built-and-ran / clean errors / crashes /
# timeouts and fails on any crash. FUZZ_ARGS adds options, e.g. FUZZ_ARGS="--seed 3 --large".
FUZZ_ARGS ?=
fuzz: $(STAMP)
	$(PY) -m tests.fuzz_campaign --configs 2000 --workers 2 --timeout 60 $(FUZZ_ARGS)

# Benchmarks get their own venv: the baselines they compare against (x-transformers) are never
# dependencies of the library. Suites write benchmarks/results/*.json; the README table is regenerated.
BENCH_VENV := benchmarks/.venv-bench
BENCH_PY := $(BENCH_VENV)/bin/python
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): pyproject.toml benchmarks/requirements.txt
	python3 -m venv $(BENCH_VENV)
	$(BENCH_PY) -m pip install -q --upgrade pip
	$(BENCH_PY) -m pip install -q torch==2.13.0
	$(BENCH_PY) -m pip install -q -e ".[compress]" -r benchmarks/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_PY) benchmarks/train_step.py
	$(BENCH_PY) benchmarks/mixer_scaling.py
	$(BENCH_PY) benchmarks/flop_coverage.py
	$(BENCH_PY) benchmarks/compile_speedup.py
	$(BENCH_PY) benchmarks/decode.py
	$(BENCH_PY) benchmarks/compress_quantize.py
	$(BENCH_PY) benchmarks/compress.py
	$(BENCH_PY) benchmarks/search_vs_random.py
	$(BENCH_PY) benchmarks/cuda_path.py
	$(BENCH_PY) benchmarks/summarize.py

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache
