#!/usr/bin/env bash
# Run galaxy-importer (what Galaxy runs on upload) against a built tarball and fail on any finding:
# an ERROR line, a module or collection it cannot resolve, or any other warning it prints (except that the
# sanity ignore files exist while empty). The importer
# itself exits 0 on all of these (Galaxy only shows them), so the output is the verdict.
# usage: scripts/galaxy-check.sh TARBALL
set -euo pipefail
cd "$(dirname "$0")/.."
tarball=$(readlink -f "$1")
venv=$PWD/.build/galaxy-importer-venv
scripts/bootstrap.sh galaxy-importer-venv >/dev/null
# its own ansible-doc and ansible-lint, not whatever PATH has first (the importer finds them on PATH)
export PATH=$venv/bin:$PATH
# as on Galaxy: no test-only collections (containers.podman) and no source-tree link resolving anything
unset ANSIBLE_COLLECTIONS_PATH ANSIBLE_COLLECTIONS_PATHS
log=$PWD/.build/galaxy-importer.log
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# its default config: ansible-lint on, ansible-test off (as on galaxy.ansible.com); it works in the cwd
if ! (cd "$work" && "$venv/bin/python" -m galaxy_importer.main "$tarball") >"$log" 2>&1; then
  cat "$log"; echo "galaxy-importer: the import itself failed"; exit 1
fi
version=$(sed -n 's/^Importing with galaxy-importer //p' "$log")
loaded=$(grep -c '^Loading ' "$log" || true)
# the one warning allowed: the sanity ignore files exist, kept empty by convention (STYLE.md); one with a
# statement in it is a finding like any other
findings=$(grep -E 'ERROR|WARNING|unknown-module|couldn.t resolve' "$log" \
  | grep -vE '^WARNING: Ignore files skip ansible-test sanity tests, found ignore-[0-9.]+\.txt with 0 statement\(s\)$' || true)
if [ -n "$findings" ] || ! grep -q '^Importer processing completed successfully' "$log"; then
  echo "galaxy-importer $version findings on $(basename "$tarball") (full log: $log):"
  echo "$findings"
  exit 1
fi
echo "galaxy-importer $version: $(basename "$tarball") imported clean ($loaded content items loaded; no ERROR or WARNING lines besides the empty sanity ignore files)"
