#!/usr/bin/env bash
# Idempotent bootstrap for a fresh Debian 12/13 machine, run as root:
#   apt packages (podman lab, netfilter tools used as test oracles, chromium for report tests),
#   the Python venv with pinned dev dependencies, test-only collections taken from the `ansible`
#   wheel on PyPI (Galaxy is unreachable), a containers.conf for this host's quirks, and the
#   Debian 12 / Debian 13 lab images (built once with debootstrap, cached in podman).
# usage: scripts/bootstrap.sh [apt|venv|collections|containers-conf|images|all]...
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/.build
cache=$root/.cache
mkdir -p "$build" "$cache"

APT_PACKAGES=(
  podman runc conmon netavark aardvark-dns containernetworking-plugins fuse-overlayfs uidmap slirp4netns
  catatonit debootstrap iptables nftables conntrack iproute2 kmod procps libcap2-bin util-linux python3-venv
  prometheus-node-exporter rsync make git ca-certificates shellcheck chromium
)
# The community package whose wheel carries the test-only collections (containers.podman for the
# molecule podman driver and the lab inventory, ansible.posix for benchmarks' naive baseline).
ANSIBLE_WHEEL_VERSION=12.3.0
TEST_COLLECTIONS=(containers/podman ansible/posix)

log() { printf '[bootstrap] %s\n' "$*"; }

step_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "apt: all packages present"; return; fi
  log "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the node exporter service on install; the tests run their own instances in
  # namespaces, so stop only the unit this step just installed.
  if printf '%s\n' "${missing[@]}" | grep -qx prometheus-node-exporter && command -v systemctl >/dev/null \
     && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus-node-exporter.service >/dev/null 2>&1 || true
  fi
}

pick_python() {
  # newest working Python >= 3.11 on PATH (pyenv shims print errors for versions not selected)
  local c
  for c in python3.14 python3.13 python3.12 python3.11 python3; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' >/dev/null 2>&1; then
      echo "$c"; return
    fi
  done
  echo "no Python >= 3.11 with venv found on PATH" >&2
  return 1
}

step_venv() {
  local py stamp want
  py=$(pick_python)
  want="$("$py" -c 'import sys; print(sys.version.split()[0])') $(sha256sum requirements/dev.txt | cut -c1-16)"
  stamp=$root/.venv/.nodeguard-stamp
  if [ -x "$root/.venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "venv: up to date ($want)"; return
  fi
  log "venv: creating with $py ($want)"
  rm -rf "$root/.venv"
  "$py" -m venv "$root/.venv"
  "$root/.venv/bin/pip" install -q --upgrade pip
  "$root/.venv/bin/pip" install -q -r requirements/dev.txt
  echo "$want" >"$stamp"
}

step_sanity_venv() {
  # ansible-test sanity installs its own pinned linters: keep them out of the dev venv
  local dest=$build/sanity-venv core
  core=$("$root/.venv/bin/python" -c 'import ansible.release as r; print(r.__version__)')
  if [ -x "$dest/bin/ansible-test" ] && [ "$("$dest/bin/python" -c 'import ansible.release as r; print(r.__version__)')" = "$core" ]; then
    log "sanity venv: up to date (ansible-core $core)"; return
  fi
  rm -rf "$dest"
  "$root/.venv/bin/python" -m venv "$dest"
  "$dest/bin/pip" install -q --upgrade pip
  "$dest/bin/pip" install -q "ansible-core==$core"
  log "sanity venv: ansible-core $core"
}

step_galaxy_importer_venv() {
  # galaxy-importer pins its own ansible-core/ansible-lint: a venv of its own, rebuilt when its pin changes
  local dest=$build/galaxy-importer-venv py want stamp
  want=$(sha256sum requirements/galaxy-importer.txt | cut -c1-16)
  stamp=$dest/.nodeguard-stamp
  if [ -x "$dest/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    log "galaxy-importer venv: up to date"; return
  fi
  py=$(pick_python)
  rm -rf "$dest"
  "$py" -m venv "$dest"
  "$dest/bin/pip" install -q --upgrade pip
  "$dest/bin/pip" install -q -r requirements/galaxy-importer.txt
  echo "$want" >"$stamp"
  log "galaxy-importer venv: $("$dest/bin/pip" show galaxy-importer | sed -n 's/^Version: //p')"
}

step_get_pip() {
  # ansible-test bootstraps pip in its sanity venvs with a script from a host this machine cannot
  # reach; put the stand-in (scripts/support/get_pip_offline.py) where it looks for a cached copy.
  local ver cache_file
  ver=$("$build/sanity-venv/bin/python" - <<'PY'
import re, ansible_test, os
src = open(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")).read()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
PY
)
  cache_file=$HOME/.ansible/test/cache/get_pip_${ver//./_}.py
  mkdir -p "$(dirname "$cache_file")"
  install -m 0644 scripts/support/get_pip_offline.py "$cache_file"
}

step_collections() {
  # .build/collections/ansible_collections/nodeguard/conntrack -> the repository (how Ansible and the
  # unit tests import it); .build/test-collections holds test-only collections.
  mkdir -p "$build/collections/ansible_collections/nodeguard"
  ln -sfn ../../../.. "$build/collections/ansible_collections/nodeguard/conntrack"
  local dest=$build/test-collections stamp
  stamp=$dest/.stamp-$ANSIBLE_WHEEL_VERSION
  if [ -f "$stamp" ]; then log "test collections: present"; return; fi
  local wheel
  wheel=$(find "$cache" -maxdepth 1 -name "ansible-$ANSIBLE_WHEEL_VERSION-*.whl" | head -n1)
  if [ -z "$wheel" ]; then
    log "test collections: downloading ansible==$ANSIBLE_WHEEL_VERSION wheel (once)"
    "$root/.venv/bin/pip" download -q --no-deps --only-binary=:all: -d "$cache" "ansible==$ANSIBLE_WHEEL_VERSION"
    wheel=$(find "$cache" -maxdepth 1 -name "ansible-$ANSIBLE_WHEEL_VERSION-*.whl" | head -n1)
  fi
  rm -rf "$dest"; mkdir -p "$dest"
  local patterns=()
  for c in "${TEST_COLLECTIONS[@]}"; do patterns+=("ansible_collections/$c/*"); done
  "$root/.venv/bin/python" - "$wheel" "$dest" "${patterns[@]}" <<'PY'
import fnmatch, sys, zipfile
wheel, dest, patterns = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    zf.extractall(dest, names)
print("extracted %d files" % len(names))
PY
  touch "$stamp"
  log "test collections: ${TEST_COLLECTIONS[*]} from ansible $ANSIBLE_WHEEL_VERSION"
}

step_containers_conf() {
  # crun refuses this host's hybrid cgroup layout and default rlimits cannot be raised here
  local hard
  hard=$(ulimit -Hn)
  cat >"$build/containers.conf.tmp" <<CONF
[containers]
default_ulimits = ["nofile=$hard:$hard", "nproc=32768:32768"]

[engine]
runtime = "runc"
CONF
  mv "$build/containers.conf.tmp" "$build/containers.conf"
  log "containers.conf: $build/containers.conf"
}

step_images() {
  export CONTAINERS_CONF=$build/containers.conf
  scripts/build-lab-image.sh bookworm localhost/nodeguard-debian12
  scripts/build-lab-image.sh trixie localhost/nodeguard-debian13
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(all)
for s in "${steps[@]}"; do
  case $s in
    apt) step_apt ;;
    venv) step_venv ;;
    collections) step_collections ;;
    sanity-venv) step_sanity_venv; step_get_pip ;;
    containers-conf) step_containers_conf ;;
    galaxy-importer-venv) step_galaxy_importer_venv ;;
    images) step_images ;;
    all) step_apt; step_venv; step_sanity_venv; step_get_pip; step_galaxy_importer_venv; step_collections; step_containers_conf; step_images ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
