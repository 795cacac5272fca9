# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch is pinned here (not in pyproject) so that CI and the demo take the CPU build on disk.
TORCH_PIN ?= torch==2.13.0

.PHONY: demo test test-native test-avx2 test-haswell qemu install install-dev lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-peers.txt
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps -r requirements-peers.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

# `make test` checks both kinds of x86 CPU whatever the machine it runs on: the whole suite
# natively, the numeric tests again with torch's AVX2 kernels, and the int8 ONNX tests
# on an emulated Haswell (AVX2, no AVX-512, no VNNI), where onnxruntime picks its AVX2 kernels.
AVX2_TESTS ?= tests/models tests/features tests/losses tests/export/test_onnx.py \
	tests/export/test_torchscript.py tests/train/test_distributed.py tests/inference/test_encoder.py
HASWELL_TESTS ?= tests/export/test_onnx.py -k int8
# The features TCG lacks are dropped so that qemu does not warn about them; none is a SIMD one.
QEMU_HASWELL := qemu-x86_64 -cpu Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm

test: test-native test-avx2 test-haswell

test-native: install-dev
	$(PY) -m pytest -q

test-avx2: install-dev
	ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -q -p no:cacheprovider -m "not slow" $(AVX2_TESTS)

test-haswell: install-dev qemu
	$(QEMU_HASWELL) $(PY) -m pytest -q -p no:cacheprovider $(HASWELL_TESTS)

# qemu-user from Debian's packages (CI runs as root); elsewhere say how to get it.
qemu:
	@command -v qemu-x86_64 >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user >/dev/null; } \
		|| { echo "make test needs qemu-x86_64 to check an AVX2-only CPU: apt-get install qemu-user (as root)"; exit 2; }

lint: install-dev
	$(PY) -m ruff check src tests bench
	$(PY) -m ruff format --check src tests bench

clean:
	rm -rf $(VENV) runs
