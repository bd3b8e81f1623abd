#!/usr/bin/env bash
# Run test tiers one after another through make, time each, print a summary, and exit non-zero
# when any tier failed (every tier still runs, so one report shows all failures).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
declare -a names=() results=() secs=()
failed=0
for tier in "$@"; do
  echo
  echo "================ tier: $tier ================"
  start=$(date +%s)
  if make --no-print-directory "$tier"; then rc=0; else rc=$?; fi
  end=$(date +%s)
  names+=("$tier"); secs+=($((end - start)))
  if [ "$rc" -eq 0 ]; then results+=(passed); else results+=("FAILED (rc=$rc)"); failed=1; fi
done
echo
echo "================ summary ================"
for i in "${!names[@]}"; do
  printf '%-12s %-16s %5ss\n' "${names[$i]}" "${results[$i]}" "${secs[$i]}"
done
exit "$failed"
