#!/usr/bin/env bash
# make demo: bring up a podman lab, drive real traffic, run the collection against it and print what
# it found. The lab is torn down at the end (set KEEP_LAB=1 to keep it for poking around).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=ngct-demo
hosts=${DEMO_HOSTS:-3}
cleanup() { [ "${KEEP_LAB:-0}" = 1 ] || scripts/lab.sh down -p "$prefix" >/dev/null; }
trap cleanup EXIT
scripts/lab.sh up -n "$hosts" -p "$prefix"
mkdir -p reports
ANSIBLE_STDOUT_CALLBACK=ansible.builtin.default ANSIBLE_DISPLAY_SKIPPED_HOSTS=false \
  ansible-playbook -i ".lab/$prefix/inventory.yml" scripts/demo.yml -e "demo_report_dir=$PWD/reports"
echo
cat reports/demo-summary.txt
