#!/usr/bin/env bash
# make demo: bring up a podman lab of three hosts (Debian 12/13), make one undersized and near full with real
# traffic, give one the classic rule mistake, then audit -> harden -> flush_stale -> audit with the collection and
# print what changed. The lab is torn down at the end (set KEEP_LAB=1 to keep it for poking around).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=ngct-demo
hosts=${DEMO_HOSTS:-3}
reports=$PWD/reports
cleanup() { [ "${KEEP_LAB:-0}" = 1 ] || scripts/lab.sh down -p "$prefix" >/dev/null; }
trap cleanup EXIT
start=$(date +%s)
scripts/lab.sh up -n "$hosts" -p "$prefix"
rm -rf "$reports/audit-before" "$reports/audit-after" "$reports/.audit-state"
mkdir -p "$reports"
ANSIBLE_STDOUT_CALLBACK=ansible.builtin.default ANSIBLE_DISPLAY_SKIPPED_HOSTS=false ANSIBLE_FORKS=10 \
  ansible-playbook -i ".lab/$prefix/inventory.yml" scripts/demo.yml -e "demo_report_dir=$reports" \
  >"$reports/demo-ansible.log" 2>&1 || { tail -40 "$reports/demo-ansible.log"; echo "demo: playbook failed, full log $reports/demo-ansible.log" >&2; exit 1; }
python3 - "$reports" "$(( $(date +%s) - start ))" <<'PY' | tee "$reports/demo-summary.txt"
import json, sys
reports, seconds = sys.argv[1], sys.argv[2]
before = json.load(open(reports + "/audit-before/conntrack-audit.json"))
after = json.load(open(reports + "/audit-after/conntrack-audit.json"))
after_by = dict((h["host"], h) for h in after["hosts"])
print("conntrack fleet audit: before -> after harden + flush_stale (%s s)" % seconds)
row = "%-12s %-13s %-9s %8s %8s %-17s   %-9s %8s %-17s"
parts = ["undersized", "faulty-rules", "clean"]  # as scripts/demo.yml assigns them, by inventory order
print(row % ("host", "part", "before", "usage%", "count", "findings", "after", "usage%", "findings"))
for index, h in enumerate(sorted(before["hosts"], key=lambda h: int(h["host"].rsplit("-", 1)[1]))):
    a = after_by[h["host"]]
    ids = lambda r: ",".join(sorted(set(f["id"] for f in r["findings"] if f["severity"] != "info"))) or "-"
    print(row % (h["host"], parts[index % 3], h["status"], "%.2f" % h["usage"]["usage_pct"], h["usage"]["count"], ids(h),
                 a["status"], "%.2f" % a["usage"]["usage_pct"], ids(a)))
print()
for r in after["hosts"]:
    for f in r["findings"]:
        if f["severity"] != "info":
            print("still open on %s: %s %s: %s" % (r["host"], f["id"], f["severity"], f["detail"]))
            print("  fix: %s" % f["fix"])
print()
print("reports: %s/audit-before/conntrack-audit.{html,md,json}" % reports)
print("         %s/audit-after/conntrack-audit.{html,md,json}" % reports)
print("ansible log: %s/demo-ansible.log" % reports)
PY
