#!/usr/bin/env bash
# make bench: run every benchmark in bench/ (as root). Benchmarks print their own figures and the
# ratios against the reference tools measured in the same run; they assert nothing about time.
# BENCH=name runs one (e.g. BENCH=facts for bench/bench_facts.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/.build/collections
mkdir -p bench/results
status=0
for f in bench/bench_*; do
  [ -f "$f" ] || continue
  name=$(basename "$f"); name=${name#bench_}; name=${name%.*}
  if [ -n "${BENCH:-}" ] && [ "$BENCH" != "$name" ]; then continue; fi
  echo "================ bench: $name ================"
  case $f in
    *.py) cmd=(.venv/bin/python "$f") ;;
    *.sh) cmd=(bash "$f") ;;
    *) continue ;;
  esac
  if "${cmd[@]}" 2>&1 | tee "bench/results/$name.txt"; then :; else status=1; echo "bench $name FAILED"; fi
done
exit $status
