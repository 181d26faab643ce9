# Every target creates or reuses .venv itself: `make serve` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
MODEL  ?= cross-encoder/ms-marco-MiniLM-L-12-v2
MODELS ?= models
STANDIN ?=
GPU    ?=
ARGS   ?=
ifeq ($(STANDIN),1)
MODEL_ARGS := --stand-in --models-root $(MODELS)
EXPORT_ARGS := --stand-in --models-root $(MODELS)
else
MODEL_ARGS := --model $(MODEL) --models-root $(MODELS)
EXPORT_ARGS := $(MODEL) --models-root $(MODELS)
endif

.PHONY: install export serve test bench bench-server bench-ray bench-int8 fuzz overload soak arm64-check avx2-check \
        lint clean

install: $(STAMP)

# torch is installed first and pinned: 2.13.0 is a CPU build; an unpinned torch pulls a
# several-GB CUDA build. GPU=1 swaps onnxruntime for onnxruntime-gpu (same module name).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
ifeq ($(GPU),1)
	$(BIN)/python -m pip uninstall -q -y onnxruntime
	$(BIN)/python -m pip install -q --force-reinstall --no-deps 'onnxruntime-gpu>=1.20,<2'
endif
	@touch $(STAMP)

export: $(STAMP)
	$(BIN)/crossrank export $(EXPORT_ARGS) $(ARGS)

# Exports the model first when models/<name> has none (the command says what to do offline).
serve: $(STAMP)
	$(BIN)/crossrank serve $(MODEL_ARGS) $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m pytest bench -s -p no:cacheprovider --benchmark-columns=median,iqr,min,rounds \
	  --benchmark-sort=name --benchmark-json=bench/results/latency-latest.json $(ARGS)
	$(BIN)/python -m bench.compare
	$(BIN)/python -m bench.families

fuzz: $(STAMP)
	CROSSRANK_FUZZ_EXAMPLES=$${EXAMPLES:-1000} $(BIN)/python -m pytest tests/test_fuzz.py -q $(ARGS)

overload: $(STAMP)
	$(BIN)/python -m bench.overload $(ARGS)

soak: $(STAMP)
	$(BIN)/python -m bench.soak $(ARGS)

bench-server: $(STAMP)
	$(BIN)/python -m bench.server_bench $(ARGS)

# bench/README.md says what each benchmark measures and how long it takes.
bench-ray: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[ray]'
	$(BIN)/python -m bench.ray_bench $(ARGS)

bench-int8: $(STAMP)
	$(BIN)/python -m bench.studies.int8_fidelity $(ARGS)

# int8 on emulated ARM64 CPUs (docs/edge-arm64.md): an aarch64 Python under qemu-user (needs
# mmdebstrap and qemu-aarch64 >= 8), then each export in DIRS served under cortex-a72,
# neoverse-n1, neoverse-v1 and max. Minutes per row; not part of `make test`.
arm64-check: $(STAMP)
	bash tools/arm64/setup.sh
	$(BIN)/python -m tools.arm64.check $${DIRS:-$(MODELS)/*/} $(ARGS)

# int8 on an AVX2 CPU without VNNI (Zen 2/3 class), each export in DIRS served as `serve` would:
# natively with CPUID masked to AVX2 (tools/avx2/run.sh: Intel CPUs with cpuid_fault, gcc), else
# this checkout's Python under qemu-x86_64 -cpu EPYC-Rome (needs qemu-user; hours a row).
avx2-check: $(STAMP)
	$(BIN)/python -m tools.arm64.check $${DIRS:-$(MODELS)/*/} \
	  --cpu $$(bash tools/avx2/run.sh --check 2>/dev/null && echo avx2-masked || echo EPYC-Rome) $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check crossrank bench tests fixtures tools
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
