#!/usr/bin/env bash
# Run the ansible-test integration targets (tests/integration/targets) with --local, as root, inside a network
# namespace created for the run (deleted on exit), on a copy of the collection placed where ansible-test wants
# it (.build/ait/<tag>/ansible_collections/nodeguard/conntrack).
# usage: scripts/ansible-integration.sh VENV PYTHON_VERSION [TAG [TARGET...]]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(readlink -f "$1"); pyver=$2; tag=${3:-dev}
[ "$(id -u)" -eq 0 ] || { echo "ansible-integration: needs root (a network namespace, iptables-save in it)" >&2; exit 1; }
copy=$PWD/.build/ait/$tag/ansible_collections/nodeguard/conntrack
rm -rf "$copy" && mkdir -p "$copy"
git ls-files -co --exclude-standard -z | rsync -a --from0 --files-from=- ./ "$copy/"
(cd "$copy" && git init -q && git add -A)
ns=ngct-ait-$$
ip netns add "$ns"
trap 'ip netns delete "$ns" 2>/dev/null || true' EXIT
ip -n "$ns" link set lo up
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS
cd "$copy"
ip netns exec "$ns" "$venv/bin/ansible-test" integration --local --python "$pyver" --color no "${@:4}"
