#!/usr/bin/env bash
# Build the collection tarball, install it into a scratch path, and prove ansible-doc can read every
# module and filter from the installed copy (not from the source tree).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
out=$PWD/.build/dist
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
rm -rf "$out"; mkdir -p "$out"
ansible-galaxy collection build --force --output-path "$out" . >/dev/null
tarball=$(find "$out" -maxdepth 1 -name 'nodeguard-conntrack-*.tar.gz' | head -n1)
echo "built $(basename "$tarball") ($(du -h "$tarball" | cut -f1))"
# nothing from the dev tree may leak into the package
leaks=$(tar -tzf "$tarball" | grep -E '^(\.venv|\.build|\.cache|\.lab|\.git|bench|scripts|requirements)/' || true)
[ -z "$leaks" ] || { echo "dev files in the tarball:"; echo "$leaks"; exit 1; }
# only the scratch path: the source tree's own link must not satisfy the install
export ANSIBLE_COLLECTIONS_PATH=$scratch
ansible-galaxy collection install --offline --force -p "$scratch" "$tarball" >/dev/null
installed=$scratch/ansible_collections/nodeguard/conntrack
modules=$(find "$installed/plugins/modules" -name '*.py' ! -name '__init__.py' -printf '%f\n' | sed 's/\.py$//' | sort)
count=0
for m in $modules; do
  ansible-doc -t module "nodeguard.conntrack.$m" >/dev/null
  count=$((count + 1))
done
listed=$(ansible-doc -t module -l nodeguard.conntrack 2>/dev/null | awk '{print $1}' | sort)
for m in $modules; do
  grep -qx "nodeguard.conntrack.$m" <<<"$listed" || { echo "ansible-doc -l does not list nodeguard.conntrack.$m"; exit 1; }
done
fcount=0
for f in $(ansible-doc -t filter -l nodeguard.conntrack 2>/dev/null | awk '{print $1}'); do
  ansible-doc -t filter "$f" >/dev/null
  fcount=$((fcount + 1))
done
roles=$(find "$installed/roles" -mindepth 1 -maxdepth 1 -type d 2>/dev/null | wc -l)
echo "installed copy: ansible-doc rendered $count module(s) and $fcount filter(s); $roles role(s) packaged"
# what Galaxy runs on upload, against the same tarball
scripts/galaxy-check.sh "$tarball"
