# imagebuilder — set-up, demo, tests, benchmarks.
# `make demo` and `make test` do all set-up on a fresh Debian 12 machine (idempotent).

SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_LIST := packaging/apt-packages.txt
APT_STAMP := $(VENV)/.apt-stamp
PIP_STAMP := $(VENV)/.pip-stamp
PYTEST_ARGS ?=

.PHONY: setup apt venv demo test test-fast bench repro container container-test clean

setup: apt venv

# Install the Debian packages listed in packaging/apt-packages.txt (only the missing ones).
apt: $(APT_STAMP)
$(APT_STAMP): $(APT_LIST)
	@missing=$$(packaging/missing-apt-packages $(APT_LIST)); \
	if [ -n "$$missing" ]; then \
	  echo "installing: $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "apt packages: all present"; fi
	@mkdir -p $(VENV) && touch $@

# A venv on Debian's python3 that also sees python3-guestfs and python3-gi (OSTree).
venv: $(PIP_STAMP)
$(PIP_STAMP): pyproject.toml $(APT_STAMP)
	@test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

demo: setup
	@bash fixtures/demo.sh

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# Only the fast tests (no QEMU boots, no slow builds) — for the edit/test loop.
test-fast: setup
	$(PY) -m pytest -m 'not slow and not qemu' $(PYTEST_ARGS)

bench: setup
	$(PY) bench/run.py

# Build REPRO_IMAGE (default: the tiny test OS) twice under different conditions, verify,
# diff, write the SBOM and signed SHA256SUMS (ci/reproducible-build; REPRO_WORKDIR to keep them).
REPRO_IMAGE ?= fixtures/images/tiny.yaml
repro: setup
	REPRO_IMAGE=$(REPRO_IMAGE) ci/reproducible-build all $(REPRO_IMAGE)

container: setup
	bash packaging/build-container.sh

container-test: setup
	$(PY) -m pytest -m slow tests/integration/test_container.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
