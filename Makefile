# Everything a user runs. `make test` is what CI runs (.ci/run).
# The project itself is not installed: it runs from this directory (flat layout).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ASSETS := $(PY) -m qemu_launcher.assets
PYTEST := $(PY) tests/run_pytest.py

.PHONY: setup host-setup rootfs drift-check test lint typecheck unit vm-test soak demo bench bench-quick bench-boot campaign campaign-adapters campaign-vm clean distclean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "need Python >= 3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
	  print("\n".join(p["dependencies"] + p["optional-dependencies"]["dev"]))' > $(VENV)/requirements.txt
	$(PY) -m pip install -q -r $(VENV)/requirements.txt
	touch $@

# Host programs (host-packages.txt: tcpdump, mmdebstrap), installed with apt if missing.
host-setup:
	bash qemu/host-setup.sh

# The guest root fs (and the QEMU it carries), cached outside the tree, keyed by recipe hash.
rootfs: setup host-setup
	$(ASSETS) build

# Before users meet it: the root fs from the archive's current versions (its own cache
# key; qemu/rootfs.lock untouched), which packages moved and what every QEMU fix finds,
# then the VM tests on it. Then adopt the versions: python -m qemu_launcher.assets lock
drift-check: setup host-setup
	EEH_ROOTFS=current $(ASSETS) drift || true
	EEH_ROOTFS=current $(PYTEST) -m vm

lint: setup
	$(VENV)/bin/ruff check .

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(PYTEST) -m 'not vm'

vm-test: rootfs
	$(PYTEST) -m vm

test: lint typecheck unit vm-test

# The full soak (about a minute): 1000 inject/recover cycles under traffic in harness mode,
# books checked every cycle, fds/threads/tasks/memory against a baseline (`make unit` runs
# 100 cycles). Figures: runs/tests/soak-last.json.
soak: setup
	EEH_SOAK_CYCLES=1000 $(PYTEST) -s tests/harness/test_soak.py

# Fault campaigns (docs/campaign.md): every (event, fault) pair of the default topology in
# harness mode, one pytest item per scenario on every core (pytest-xdist); results,
# campaign.json, report.md, report.html, junit.xml in runs/campaign/exhaustive/.
# run_pytest.py takes pytest's exit status 5 (nothing collected) as success.
campaign: setup
	$(PYTEST) -p eeh_sriov.campaign.items --eeh-campaign=exhaustive -n auto -q \
	  --junitxml=runs/campaign/exhaustive/junit.xml

# The documented VM subset (vm-default) in real guests, then its reports; the run's exit
# status is kept.
# The two-adapter matrix (docs/campaign.md: faults on nic0 or nic1, the per-adapter
# isolation oracle) in harness mode at 2 x 64 VFs: 24 scenarios, about 85 s on one worker.
campaign-adapters: setup
	$(PYTEST) -p eeh_sriov.campaign.items --eeh-campaign=matrix:two-adapters-harness -q \
	  --eeh-campaign-out=runs/campaign/adapters

campaign-vm: rootfs
	rm -rf runs/campaign/vm
	$(PY) -m eeh_sriov campaign run --vm --subset vm-default --out runs/campaign/vm; \
	  status=$$?; $(PY) -m eeh_sriov campaign report runs/campaign/vm && exit $$status

demo: rootfs
	$(PY) -m eeh_sriov demo

bench-boot: rootfs
	$(PY) -m bench.boot

# Every benchmark (about 17 minutes: bench.scale's nine guests and the igb peer at 7 VFs take ~5.5, bench.adapters' 2 x 64 VFs ~0.5): runs/bench/<run>/results.json, results.md, plots.
bench: rootfs
	$(PY) -m bench

bench-quick: rootfs
	$(PY) -m bench --quick

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache .hypothesis

distclean: clean
	rm -rf $(VENV)
