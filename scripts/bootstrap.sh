#!/usr/bin/env bash
# Idempotent bootstrap for a Debian 12/13 machine:
#   apt packages (podman lab, netfilter tools used as test oracles, chromium for report tests) -- the only
#   step that needs root, and only when a package is missing; the Python venv with pinned dev dependencies;
#   the test-only collections; a containers.conf for this host; the Debian 12 / Debian 13 lab images.
# Workarounds for one kind of build machine (no route to galaxy.ansible.com or to ansible-test's download
# host, a hybrid cgroup layout, low hard rlimits) are applied only where a probe finds the condition; each
# is explained where it is applied.
# usage: scripts/bootstrap.sh [apt|venv|collections|containers-conf|sanity-venv|galaxy-importer-venv|images|vm-images|all]...
#   vm-images: the Debian 12 / Debian 13 VM images of the vm tier (scripts/build-vm-image.sh; cached in
#   /var/cache/nodeguard-conntrack/vm, outside the checkout, keyed on the recipe's hash).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=$root/.build
cache=$root/.cache
mkdir -p "$build" "$cache"
# one bootstrap at a time (make demo and make test started together would build the same venvs); flock -o keeps
# the lock out of anything a step starts
if [ -z "${NODEGUARD_BOOTSTRAP_LOCKED:-}" ]; then
  NODEGUARD_BOOTSTRAP_LOCKED=1 exec flock -o "$build/.bootstrap.lock" "$root/scripts/bootstrap.sh" "$@"
fi

APT_PACKAGES=(
  podman runc conmon netavark aardvark-dns containernetworking-plugins fuse-overlayfs uidmap slirp4netns
  catatonit debootstrap iptables nftables conntrack iproute2 kmod procps libcap2-bin util-linux python3-venv
  prometheus-node-exporter rsync make git ca-certificates shellcheck chromium
  qemu-system-x86 qemu-utils openssh-client e2fsprogs
)
# Test-only collections (containers.podman for the molecule podman driver and the lab inventory,
# ansible.posix for the benchmarks' naive baseline), pinned to the versions the `ansible` 12.3.0 package
# ships, so either source below gives the same files.
ANSIBLE_WHEEL_VERSION=12.3.0
TEST_COLLECTIONS=(containers.podman:1.18.0 ansible.posix:2.1.0)
PROBE_TIMEOUT=5

# answers HTTP(S) within PROBE_TIMEOUT seconds? (any HTTP status counts: the host is there)
reachable() {
  local py
  py=$(command -v python3 || true)
  [ -n "$py" ] || return 1
  "$py" - "$1" "$PROBE_TIMEOUT" <<'PY' >/dev/null 2>&1
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=float(sys.argv[2]))
except urllib.error.HTTPError:
    pass
PY
}

log() { printf '[bootstrap] %s\n' "$*"; }

step_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -eq 0 ]; then log "apt: all packages present"; return; fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "[bootstrap] apt: missing packages ${missing[*]}; install them as root (sudo scripts/bootstrap.sh apt)" >&2
    return 1
  fi
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
  # rebuilt only when requirements/dev.txt changes or the venv's Python no longer runs (not because another
  # Python >= 3.11 appeared on PATH, or this user sees a different one)
  local py stamp want
  want=$(sha256sum requirements/dev.txt | cut -c1-16)
  stamp=$root/.venv/.nodeguard-stamp
  if "$root/.venv/bin/python" -c '' 2>/dev/null && [ -f "$stamp" ] && [ "$(cut -d' ' -f2 "$stamp")" = "$want" ]; then
    log "venv: up to date ($(cat "$stamp"))"; return
  fi
  py=$(pick_python)
  want="$("$py" -c 'import sys; print(sys.version.split()[0])') $want"
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
  # ansible-test bootstraps pip in its sanity venvs with get-pip.py from ci-files.testing.ansible.com, cached
  # in ~/.ansible/test/cache. Where that host does not answer, put a stand-in (scripts/support/get_pip_offline.py:
  # ensurepip, then pip installs the pinned packages from the index) where ansible-test looks for its cached
  # copy; where it answers, leave ansible-test its real download (and take back a stand-in left by an earlier run).
  local venv=${1:-$build/sanity-venv} ver cache_file url
  ver=$("$venv/bin/python" - <<'PY'
import re, ansible_test, os
src = open(os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")).read()
print(re.search(r"pip='([0-9.]+)'", src).group(1))
PY
)
  url=https://ci-files.testing.ansible.com/ansible-test/get-pip-$ver.py
  cache_file=$HOME/.ansible/test/cache/get_pip_${ver//./_}.py
  if reachable "$url"; then
    if [ -f "$cache_file" ] && cmp -s "$cache_file" scripts/support/get_pip_offline.py; then rm -f "$cache_file"; fi
    log "get-pip: $url answers; ansible-test downloads it itself"
    return
  fi
  mkdir -p "$(dirname "$cache_file")"
  install -m 0644 scripts/support/get_pip_offline.py "$cache_file"
  log "get-pip: $url does not answer within ${PROBE_TIMEOUT}s; offline stand-in at $cache_file"
}

step_collections() {
  # .build/collections/ansible_collections/nodeguard/conntrack -> the repository (how Ansible and the
  # unit tests import it); .build/test-collections holds test-only collections.
  mkdir -p "$build/collections/ansible_collections/nodeguard"
  ln -sfn ../../../.. "$build/collections/ansible_collections/nodeguard/conntrack"
  local dest=$build/test-collections stamp want c
  want="${TEST_COLLECTIONS[*]}"
  stamp=$dest/.stamp
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then log "test collections: present"; return; fi
  rm -rf "$dest"; mkdir -p "$dest"
  if reachable https://galaxy.ansible.com/api/; then
    local specs=()
    for c in "${TEST_COLLECTIONS[@]}"; do specs+=("${c%%:*}==${c#*:}"); done
    "$root/.venv/bin/ansible-galaxy" collection install --no-deps -p "$dest" "${specs[@]}" >/dev/null
    log "test collections: ${specs[*]} from Galaxy"
  else
    # No answer from Galaxy within PROBE_TIMEOUT s: the `ansible` package on PyPI (reachable through pip)
    # carries the same collection versions; unpack just those from its wheel (downloaded once, kept in .cache).
    local wheel patterns=()
    wheel=$(find "$cache" -maxdepth 1 -name "ansible-$ANSIBLE_WHEEL_VERSION-*.whl" | head -n1)
    if [ -z "$wheel" ]; then
      log "test collections: Galaxy does not answer; downloading ansible==$ANSIBLE_WHEEL_VERSION wheel (once)"
      "$root/.venv/bin/pip" download -q --no-deps --only-binary=:all: -d "$cache" "ansible==$ANSIBLE_WHEEL_VERSION"
      wheel=$(find "$cache" -maxdepth 1 -name "ansible-$ANSIBLE_WHEEL_VERSION-*.whl" | head -n1)
    fi
    for c in "${TEST_COLLECTIONS[@]}"; do c=${c%%:*}; patterns+=("ansible_collections/${c/.//}/*"); done
    "$root/.venv/bin/python" - "$wheel" "$dest" "${TEST_COLLECTIONS[@]}" -- "${patterns[@]}" <<'PY'
import fnmatch, json, sys, zipfile
args = sys.argv[1:]
wheel, dest, pins, patterns = args[0], args[1], args[2:args.index("--")], args[args.index("--") + 1:]
with zipfile.ZipFile(wheel) as zf:
    names = [n for n in zf.namelist() if any(fnmatch.fnmatch(n, p) for p in patterns)]
    zf.extractall(dest, names)
    for pin in pins:
        fqcn, version = pin.split(":")
        info = json.loads(zf.read("ansible_collections/%s/MANIFEST.json" % fqcn.replace(".", "/")))["collection_info"]
        if info["version"] != version:
            sys.exit("%s in the wheel is %s, pinned %s" % (fqcn, info["version"], version))
print("extracted %d files" % len(names))
PY
    log "test collections: ${TEST_COLLECTIONS[*]} from the ansible $ANSIBLE_WHEEL_VERSION wheel (Galaxy does not answer)"
  fi
  echo "$want" >"$stamp"
}

step_containers_conf() {
  # .build/containers.conf (the Makefile points CONTAINERS_CONF at it): only what this host needs.
  local conf=() hard_nofile hard_nproc cgroup_fs
  cgroup_fs=$(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo unknown)
  # crun (podman's default runtime) refuses a hybrid or v1 cgroup layout; runc runs on it. Also use runc
  # when crun is not installed at all.
  if [ "$cgroup_fs" != cgroup2fs ] || ! command -v crun >/dev/null 2>&1; then
    command -v runc >/dev/null 2>&1 || { echo "[bootstrap] containers.conf: need runc (cgroup fs $cgroup_fs, crun $(command -v crun || echo absent))" >&2; return 1; }
    conf+=("[engine]" "runtime = \"runc\"" "")
    log "containers.conf: runtime runc (cgroup fs $cgroup_fs, crun $(command -v crun || echo absent))"
  fi
  # podman gives rootful containers nofile=1048576 and nproc=4194304 by default and fails to start them
  # where the hard limits are lower (no raising them here): cap the container limits at what the host allows.
  hard_nofile=$(ulimit -Hn); hard_nproc=$(ulimit -Hu)
  local ulimits=()
  if [ "$hard_nofile" != unlimited ] && [ "$hard_nofile" -lt 1048576 ]; then ulimits+=("\"nofile=$hard_nofile:$hard_nofile\""); fi
  if [ "$hard_nproc" != unlimited ] && [ "$hard_nproc" -lt 4194304 ]; then
    local nproc=$(( hard_nproc < 32768 ? hard_nproc : 32768 ))
    ulimits+=("\"nproc=$nproc:$nproc\"")
  fi
  if [ ${#ulimits[@]} -gt 0 ]; then
    local joined
    joined=$(IFS=,; echo "${ulimits[*]}")
    conf=("[containers]" "default_ulimits = [${joined//,/, }]" "" "${conf[@]}")
    log "containers.conf: ulimits ${ulimits[*]} (hard nofile $hard_nofile, nproc $hard_nproc)"
  fi
  { echo "# written by scripts/bootstrap.sh containers-conf for this host; see the comments there"
    printf '%s\n' "${conf[@]}"; } >"$build/containers.conf.tmp"
  mv "$build/containers.conf.tmp" "$build/containers.conf"
  log "containers.conf: $build/containers.conf"
}

step_images() {
  export CONTAINERS_CONF=$build/containers.conf
  scripts/build-lab-image.sh bookworm localhost/nodeguard-debian12
  scripts/build-lab-image.sh trixie localhost/nodeguard-debian13
}

step_vm_images() {
  scripts/build-vm-image.sh bookworm
  scripts/build-vm-image.sh trixie
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
    get-pip:*) step_get_pip "${s#get-pip:}" ;;
    images) step_images ;;
    vm-images) step_vm_images ;;
    all) step_apt; step_venv; step_sanity_venv; step_get_pip; step_galaxy_importer_venv; step_collections; step_containers_conf; step_images
         step_vm_images ;;
    *) echo "unknown step $s" >&2; exit 2 ;;
  esac
done
