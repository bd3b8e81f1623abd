#!/usr/bin/env bash
# The matrix tier: for each ansible-core / Python pair below, a venv of its own under .build/matrix/ (installed
# from PyPI by this script, rebuilt when its requirements file changes) runs
#   unit    pytest tests/unit
#   sanity  ansible-test sanity --requirements on a copy of the collection
#   smoke   the ansible-test integration targets (tests/integration/targets) with --local in a network namespace,
#           and the conntrack_facts target as a playbook whose managed node runs the oldest Python that
#           ansible-core accepts on targets (3.8 for 2.19, the collection's floor; 3.9 for 2.20 and later)
# A pair whose Python is not installed is reported loudly and fails the tier, unless NODEGUARD_MATRIX_SKIP=1
# (then it is reported as SKIPPED, never as passed).
# usage: scripts/matrix.sh [LEG...]   (legs: core2.19 core2.21; default both)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
# leg -> "requirements file | Python versions to try, best first"
declare -A LEG_REQ=([core2.19]=requirements/matrix-core2.19.txt [core2.21]=requirements/matrix-core2.21.txt)
declare -A LEG_PY=([core2.19]="3.11" [core2.21]="3.13 3.12")
legs=("$@"); [ ${#legs[@]} -gt 0 ] || legs=(core2.19 core2.21)

find_python() {
  # python3.X on PATH (pyenv shims fail for versions not selected: run it to be sure), else pyenv's newest 3.X.*
  local v=$1 exe
  for exe in $(command -v "python$v" 2>/dev/null) \
             $(find "${PYENV_ROOT:-$HOME/.pyenv}/versions" -mindepth 3 -maxdepth 3 -path "*/versions/$v.*/bin/python$v" 2>/dev/null | sort -V -r); do
    if "$exe" -c "import sys, venv, ensurepip; assert sys.version_info[:2] == tuple(map(int, '$v'.split('.')))" >/dev/null 2>&1; then
      echo "$exe"; return 0
    fi
  done
  return 1
}

declare -a summary=()
failed=0
for leg in "${legs[@]}"; do
  req=${LEG_REQ[$leg]:-}
  [ -n "$req" ] || { echo "matrix: unknown leg $leg" >&2; exit 2; }
  py=""; pyver=""
  for v in ${LEG_PY[$leg]}; do
    if py=$(find_python "$v"); then pyver=$v; break; fi
  done
  if [ -z "$pyver" ]; then
    echo
    echo "!!!!!!!!!!!!!!!! matrix $leg: NO Python ${LEG_PY[$leg]// / or } interpreter on this machine: this leg did NOT run !!!!!!!!!!!!!!!!"
    if [ "${NODEGUARD_MATRIX_SKIP:-0}" = 1 ]; then
      summary+=("$leg: SKIPPED (no Python ${LEG_PY[$leg]// / or }; NODEGUARD_MATRIX_SKIP=1)")
    else
      summary+=("$leg: FAILED (no Python ${LEG_PY[$leg]// / or }; set NODEGUARD_MATRIX_SKIP=1 to skip)"); failed=1
    fi
    continue
  fi
  venv=$root/.build/matrix/$leg-py$pyver
  want="$("$py" -c 'import sys; print(sys.version.split()[0])') $(sha256sum "$req" | cut -c1-16)"
  if ! { [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.nodeguard-stamp" 2>/dev/null)" = "$want" ]; }; then
    echo "[matrix] $leg: creating $venv with $py"
    rm -rf "$venv"
    if ! { "$py" -m venv "$venv" && "$venv/bin/pip" install -q --upgrade pip && "$venv/bin/pip" install -q -r "$req"; }; then
      summary+=("$leg: FAILED (venv install)"); failed=1; continue
    fi
    echo "$want" >"$venv/.nodeguard-stamp"
  fi
  scripts/bootstrap.sh "get-pip:$venv" || { summary+=("$leg: FAILED (get-pip)"); failed=1; continue; }
  core=$("$venv/bin/python" -c 'import ansible.release as r; print(r.__version__)')
  pyfull=$("$venv/bin/python" -c 'import sys; print(sys.version.split()[0])')
  echo
  echo "================ matrix $leg: ansible-core $core, Python $pyfull ================"
  results=()

  echo "---- unit"
  log=$root/.build/matrix/$leg-unit.log
  if "$venv/bin/python" -m pytest -p no:cacheprovider tests/unit -q >"$log" 2>&1; then r=passed; else r=FAILED; failed=1; tail -30 "$log"; fi
  results+=("unit $r ($(tail -1 "$log" | sed 's/=//g; s/^ *//; s/ *$//'))")

  echo "---- sanity"
  copy=$root/.build/matrix/sanity-$leg/ansible_collections/nodeguard/conntrack
  rm -rf "$copy" && mkdir -p "$copy"
  git ls-files -co --exclude-standard -z | rsync -a --from0 --files-from=- ./ "$copy/"
  (cd "$copy" && git init -q && git add -A)
  log=$root/.build/matrix/$leg-sanity.log
  if (cd "$copy" && "$venv/bin/ansible-test" sanity --requirements --python "$pyver" --color no) >"$log" 2>&1; then r=passed
  else r=FAILED; failed=1; grep -E '^ERROR|^FATAL' "$log" | head -30; fi
  results+=("sanity $r ($(grep -c '^Running sanity test' "$log") tests run)")

  echo "---- smoke"
  log=$root/.build/matrix/$leg-smoke.log
  if scripts/ansible-integration.sh "$venv" "$pyver" "$leg" >"$log" 2>&1; then r=passed; else r=FAILED; failed=1; grep -E 'fatal|FAILED|ERROR' "$log" | head -20; fi
  results+=("smoke $r ($(grep -c '^Running .* integration test role' "$log") ansible-test targets)")

  # the managed node on the oldest Python this ansible-core runs modules on (3.8 for 2.19, 3.9 for 2.20+), never
  # below the collection's own floor of 3.8
  oldest=$("$venv/bin/python" -c 'from ansible.module_utils import basic; print("%d.%d" % max((3, 8), tuple(basic._PY_MIN)))')
  log=$root/.build/matrix/$leg-smoke-py$oldest.log
  if oldpy=$(find_python "$oldest"); then
    if scripts/smoke-oldest-python.sh "$venv" "$oldpy" "$oldest" >"$log" 2>&1; then r=passed; else r=FAILED; failed=1; tail -20 "$log"; fi
    results+=("managed node on Python $oldest $r")
  else
    echo "!!!!!!!! matrix $leg: NO Python $oldest on this machine: the managed-node smoke on $oldest did NOT run !!!!!!!!"
    if [ "${NODEGUARD_MATRIX_SKIP:-0}" = 1 ]; then results+=("managed node on Python $oldest SKIPPED")
    else results+=("managed node on Python $oldest FAILED (no $oldest)"); failed=1; fi
  fi
  joined=$(printf '%s; ' "${results[@]}")
  summary+=("$leg: ansible-core $core / Python $pyfull: ${joined%; }")
done
echo
echo "================ matrix summary ================"
printf '%s\n' "${summary[@]}"
exit "$failed"
