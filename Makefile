# The two commands: `make demo` and `make test`. Everything they need is installed on the way (.venv with
# pinned torch; the Rust build links that torch's libtorch).
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1
# Python caches the bytecode of what it imports (once, in .venv) even where the environment says not to:
# without it every Python process of the tests compiles torch and timm anew (seconds each).
unexport PYTHONDONTWRITEBYTECODE
STAMP := $(VENV)/.robustvit-requirements
# The four compiler packages must match (or ptxas rejects the PTX); the runtime pin keeps pip from upgrading
# torch's CUDA runtime to satisfy them.
CUDA_TOOLS := nvidia-cuda-nvcc==13.0.* nvidia-cuda-cccl==13.0.* nvidia-cuda-crt==13.0.* nvidia-nvvm==13.0.* \
	nvidia-cuda-runtime==13.0.*
# The ops library for Python/TorchScript, linked by the Rust build from the objects it links into the binaries.
PYLIB := target/debug/librobustvit_ops.so

.PHONY: demo test test-rust test-python lint fmt-check clippy pylib bench cuda-tools cuda bootstrap benchmark-data \
	system-deps
OBJECTS := target/downloads/animal_mnist-0.4-py3-none-any.whl

# The main job on the embedded benchmark: tables in out/compare (one seed: 331 s of study on 2 cores after the
# build; `--seeds 3` for standard errors takes about 16 minutes). The dev build: a release build ran the study
# in 326 s (its tiny models are libtorch-bound) and costs a cold build of 8-9 minutes more (docs/performance.md).
demo: system-deps $(STAMP) $(OBJECTS)
	cargo run --quiet --bin harness -- compare --baselines gradmask,rrr --out out/compare

# The embedded benchmark's objects: the animal-mnist wheel from PyPI, read in Rust (never installed:
# its metadata pulls in tensorflow).
benchmark-data: $(OBJECTS)

$(OBJECTS): $(STAMP)
	$(VENV)/bin/pip download --quiet --no-deps animal-mnist==0.4 -d target/downloads
	@touch $@  # pip leaves an already downloaded file's time alone: without this make would ask again each run

# One build serves both halves: the Rust tests, and the ops library the Python tests load. --locked: the
# tests run against Cargo.lock as committed. Two tests at a time, each process on one thread (libtorch's
# OpenMP, rayon): the tests' models are too small to gain from a second thread, so on 2 cores the cold
# integration suite took 109 s where one test at a time on two threads took about 200 s.
RUST_TESTS := RUST_TEST_THREADS=2 OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1 cargo test --locked
PYTHON_TESTS := ROBUSTVIT_OPS_LIB=$(PYLIB) $(VENV)/bin/python -m pytest python/tests -q

# Both suites, side by side once everything is built (the Python suite keeps about one core busy for half a
# minute, and the Rust suite leaves cores idle while its fixtures are made); the Python report follows the
# Rust one, and either failing fails the target.
test: system-deps $(STAMP) $(OBJECTS)
	cargo test --locked --no-run
	@echo "$(PYTHON_TESTS) (beside the Rust tests; its report follows theirs)"
	@$(PYTHON_TESTS) > target/python-tests.log 2>&1 & python=$$!; \
	$(RUST_TESTS); rust=$$?; \
	wait $$python; status=$$?; cat target/python-tests.log; \
	[ $$rust -eq 0 ] && [ $$status -eq 0 ]

test-rust: system-deps $(STAMP) $(OBJECTS)
	$(RUST_TESTS)

test-python: pylib
	$(PYTHON_TESTS)

# The gates CI runs beside the tests: formatting as rustfmt.toml says, and clippy without warnings.
lint: fmt-check clippy

fmt-check:
	cargo fmt --all -- --check

clippy: system-deps $(STAMP)
	cargo clippy --locked --workspace --all-targets --features robustvit/bench -- -D warnings

# The ops as a shared library for Python/TorchScript: torch.ops.load_library(<printed path>).
pylib: system-deps $(STAMP)
	cargo build --quiet --locked -p robustvit --lib
	@echo $(CURDIR)/$(PYLIB)

# Measurements, not tests (docs/performance.md): the ops against their memory floor, one finetuning step per
# method against plain PyTorch, and evaluation throughput; from an optimised build, on an otherwise idle machine.
bench: system-deps $(STAMP)
	cargo bench -p robustvit --features bench --bench gae_relevance -- ratios
	cargo run --release --quiet --bin harness -- bench-step --python $(VENV)/bin/python --out target/bench-step.csv
	$(VENV)/bin/python python/bench/gtsegs.py target/bench-gtsegs.mat 128
	cargo run --release --quiet --bin harness -- bench-eval --segtest target/bench-gtsegs.mat

# CUDA without a GPU: pip's nvcc in .venv.
cuda-tools: $(STAMP)
	$(VENV)/bin/pip install --quiet $(CUDA_TOOLS)

# The harness and the ops library with CUDA kernels, in target/cuda/debug, to carry to a GPU machine and
# check there with scripts/gpu-check.sh; the Python suite runs here against that library (its CUDA kernels
# must be registered). A separate target folder, so the CPU build is not rebuilt.
cuda: system-deps cuda-tools
	CARGO_TARGET_DIR=target/cuda cargo build --quiet --workspace --features robustvit/cuda
	ROBUSTVIT_OPS_LIB=target/cuda/debug/librobustvit_ops.so ROBUSTVIT_EXPECT_CUDA=1 \
		$(VENV)/bin/python -m pytest python/tests -q
	@echo $(CURDIR)/target/cuda/debug/harness $(CURDIR)/target/cuda/debug/librobustvit_ops.so

bootstrap: system-deps $(STAMP)

# libhdf5 for the Rust build (apt-get when missing).
system-deps:
	scripts/system-deps.sh

# uv installs the pinned set from its cache in seconds; the Rust build, which needs torch's headers, follows.
$(STAMP): scripts/requirements.txt scripts/constraints.txt scripts/bootstrap.sh
	scripts/bootstrap.sh
