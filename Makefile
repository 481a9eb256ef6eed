# Two entry points that work on a fresh machine: `make demo` and `make test`.
# Each installs what it needs: Debian packages, a venv, and the control plane built from Go.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: deps system-packages venv controlplane test test-fast demo bench bench-smoke crd lint clean

deps: system-packages venv controlplane

# Prometheus and PostgreSQL for the stack; containerd, runc, the CNI plugins, buildah, debootstrap
# and socat for the local node (devstack.node) and its images (devstack.images).
DEBIAN_PACKAGES := prometheus postgresql containerd runc containernetworking-plugins buildah debootstrap socat iptables

system-packages:
	@if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
	  || ! command -v containerd >/dev/null || ! command -v runc >/dev/null || ! test -x /usr/lib/cni/bridge \
	  || ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null || ! command -v socat >/dev/null; then \
	  echo ">> installing Debian packages: $(DEBIAN_PACKAGES)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBIAN_PACKAGES) >/dev/null; \
	fi

venv: $(VENV)/.installed

# One command installs the three distributions (each with only its own dependencies) and the dev tools.
DISTRIBUTIONS := operator/pyproject.toml runtime/pyproject.toml hack/pyproject.toml

$(VENV)/.installed: $(DISTRIBUTIONS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e ./operator -e './runtime[postgres]' -e './hack[test]'
	@touch $@

controlplane:
	@echo ">> control plane and node binaries (built once from the Go module proxy, then cached):"
	@hack/build-controlplane.sh --node

crd: venv
	$(PY) -m modelrollout.crd > crds/modelrollout.yaml

# Lint first (seconds), then every test, then every benchmark once in quick mode.
# pytest exits 5 when it collects no test: that is a failure here, not a pass.
test: deps lint
	$(PY) -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status
	$(MAKE) --no-print-directory bench-smoke

# ruff over the whole tree; mypy --strict over the operator package (settings in pyproject.toml).
lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy

test-fast: deps
	$(PY) -m pytest -m "not e2e and not slow" $(PYTEST_ARGS)

demo: deps
	$(PY) -m devstack.demo

# Every benchmark at its own size, then the operator at 1,000 rollouts (the script's default is 200).
bench: deps
	@for bench in benchmarks/*.py; do $(PY) $$bench || exit 1; done
	$(PY) benchmarks/operator_scale.py 1000

# Each benchmark in its quick mode (BENCH_QUICK=1): it must run to the end and print its figures
# as JSON lines. A smoke test that asserts no timing.
bench-smoke: deps
	$(PY) -m devstack.bench benchmarks/*.py

clean:
	rm -rf $(VENV) .pytest_cache
