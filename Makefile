# nodeguard.conntrack — the two commands a newcomer needs are `make demo` and `make test`.
# Every target bootstraps what it needs first (idempotent, cached).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
BUILD := $(ROOT)/.build
SANITY_ROOT := $(BUILD)/sanity/ansible_collections/nodeguard/conntrack
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)/collections:$(BUILD)/test-collections
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := false
export CONTAINERS_CONF := $(BUILD)/containers.conf
export ANSIBLE_FORCE_COLOR := false
export ANSIBLE_NOCOLOR := true
export PY_COLORS := 0
export LANG := C.UTF-8
export LC_ALL := C.UTF-8
PYTEST := $(VENV)/bin/python -m pytest -p no:cacheprovider
SCENARIO ?=
# every scenario directory under extensions/molecule (except the shared resources)
SCENARIOS := $(if $(SCENARIO),$(SCENARIO),$(notdir $(patsubst %/molecule.yml,%,$(wildcard extensions/molecule/*/molecule.yml))))

.PHONY: py-env sys-env help bootstrap demo test lint sanity unit integration vm ansible-integration matrix molecule build galaxy-check bench lab-up lab-down clean

help:
	@echo "make demo         bring up a podman lab, run the collection against it, print what it found"
	@echo "make test         every test tier: lint sanity build unit integration vm matrix molecule"
	@echo "make lint | sanity | build (incl. galaxy-importer) | unit | integration | vm | ansible-integration | matrix | molecule [SCENARIO=x] | bench"
	@echo "make lab-up [LAB_HOSTS=3] | lab-down"

bootstrap:
	@scripts/bootstrap.sh all

# the Python side (venv, collections): no root needed once the venv exists
$(BUILD)/.bootstrapped-py: requirements/dev.txt scripts/bootstrap.sh
	@scripts/bootstrap.sh venv collections
	@touch $@

py-env: $(BUILD)/.bootstrapped-py

# the system side (apt packages: root only when one is missing; containers.conf for this host)
sys-env: py-env
	@scripts/bootstrap.sh apt containers-conf

demo: bootstrap
	@scripts/demo.sh

test: bootstrap
	@scripts/run-tiers.sh lint sanity build unit integration vm matrix molecule

lint: py-env
	ansible-lint --offline --profile production
	@# plugin and role documentation (markup, references between plugins) as antsibull-docs renders it
	cd $(BUILD)/collections/ansible_collections/nodeguard/conntrack && antsibull-docs lint-collection-docs --plugin-docs .
	@# changelog fragments: antsibull-changelog's schema, then the conventions it does not check
	antsibull-changelog lint
	python scripts/check-changelog.py

sanity: sys-env
	@rm -rf $(SANITY_ROOT) && mkdir -p $(SANITY_ROOT)
	@git ls-files -co --exclude-standard -z | rsync -a --from0 --files-from=- ./ $(SANITY_ROOT)/
	@# ansible-test lists files through git: give the copy its own repository
	@cd $(SANITY_ROOT) && git init -q && git add -A
	@# a venv of its own: ansible-test installs its pinned sanity requirements there (its --venv mode
	@# needs a download from a host this machine cannot reach)
	@scripts/bootstrap.sh sanity-venv
	cd $(SANITY_ROOT) && $(BUILD)/sanity-venv/bin/ansible-test sanity --requirements --python $$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') --color no

build: py-env
	@scripts/check-build.sh

# build includes it; this name is for running it on its own
galaxy-check: build

unit: py-env
	$(PYTEST) tests/unit -q

integration: sys-env
	$(PYTEST) tests/kernel -q -rfE --durations=10

# QEMU VMs with Debian's own kernels (12: 6.1, 13: 6.12): boot race, reboots, host-scope knobs, SSH
vm: sys-env
	@scripts/bootstrap.sh vm-images
	$(PYTEST) tests/vm -q -rfE

# ansible-test integration targets (tests/integration/targets) with the dev venv, in a network namespace
ansible-integration: sys-env
	@scripts/ansible-integration.sh $(VENV) $$($(VENV)/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])') dev

# unit, sanity and the smoke targets on ansible-core 2.19.x / Python 3.11 and the newest 2.21.x / Python 3.13
# or 3.12, each in its own venv under .build/matrix (NODEGUARD_MATRIX_SKIP=1 skips a pair without its Python)
matrix: sys-env
	@scripts/matrix.sh

molecule: bootstrap
	@failed=""; for s in $(SCENARIOS); do \
	  echo "== molecule scenario $$s"; start=$$(date +%s); \
	  if (cd extensions && MOLECULE_EPHEMERAL_DIRECTORY=$(BUILD)/molecule/$$s molecule test -s $$s); then r=passed; \
	  else r=FAILED; failed="$$failed $$s"; fi; \
	  echo "== molecule scenario $$s: $$r in $$(( $$(date +%s) - start )) s"; \
	done; \
	if [ -n "$$failed" ]; then echo "molecule scenarios failed:$$failed"; exit 1; fi

bench: bootstrap
	@scripts/run-bench.sh

LAB_HOSTS ?= 3
lab-up: bootstrap
	scripts/lab.sh up -n $(LAB_HOSTS)

lab-down:
	scripts/lab.sh down

clean: lab-down
	rm -rf $(BUILD)/sanity $(ROOT)/tests/output
