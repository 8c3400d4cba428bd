# Every target creates .venv on first use; torch is pinned first so pip takes the CPU wheel.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# The main job on embedded data: ViT and every efficient mixer, same budget each, on digits.
demo: $(STAMP)
	$(VENV)/bin/anyformer compare --task digits --budget-s 12 --set dim=64 --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
