"""The audit collected in one module run per host reports what the 0.1.0 role (five module runs per host, three
table dumps) reported, on the same namespace fleet: same JSON report and node_exporter textfile, first run and a
second run with counter deltas, and the same state records. Only timestamps may differ.

The fleet: a host with NATed flows (DNAT in OUTPUT) and a rule-set mistake (NEW accepted, no ESTABLISHED
accept, policy DROP), a host with established TCP connections and a declared peak (sizing from the memory and CPU count the
facts return instead of the setup module's), and a clean host.
"""
import json
import os
import subprocess

from legacy_audit import legacy_collection
from netns_lab import COLLECTIONS_PATH, namespace_inventory, run_collection_playbook, wait_line

TIME_KEYS = ("generated_at", "collected_at", "collected_epoch", "since", "elapsed_seconds", "epoch")


def _strip_times(value):
    if isinstance(value, dict):
        return dict((k, "<time>" if k in TIME_KEYS and v is not None else _strip_times(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_strip_times(v) for v in value]
    return value


def _differences(new, old, path="report"):
    """Paths where two JSON documents differ, for a readable failure."""
    if isinstance(new, dict) and isinstance(old, dict):
        out = []
        for key in sorted(set(new) | set(old)):
            out += _differences(new.get(key, "<absent>"), old.get(key, "<absent>"), "%s.%s" % (path, key))
        return out
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        out = []
        for index, (a, b) in enumerate(zip(new, old)):
            out += _differences(a, b, "%s[%d]" % (path, index))
        return out
    return [] if new == old else ["%s: new %r, legacy %r" % (path, new, old)]


def _fleet(lab):
    nat = lab.add("lnat", conntrack_rule=False)
    # DNAT of locally generated UDP: entries with the dnat status bit, held by a long UDP timeout
    nat.sh("sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600 net.netfilter.nf_conntrack_udp_timeout_stream=600\n"
           "iptables -t nat -A OUTPUT -d 127.0.0.2 -p udp -j DNAT --to-destination 127.0.0.1\n"
           "iptables -P INPUT DROP\n"
           "iptables -A INPUT -p tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT\n")
    nat.python("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
               "for port in range(6000, 6012):\n    s.sendto(b'x', ('127.0.0.2', port))\n")
    tcp = lab.add("ltcp")
    server = tcp.spawn(["python3", "-c",
                        "import socket, sys, time\n"
                        "srv = socket.socket(); srv.bind(('127.0.0.1', 8080)); srv.listen(16)\n"
                        "c = [socket.create_connection(('127.0.0.1', 8080)) for _ in range(5)]\n"
                        "p = [srv.accept()[0] for _ in c]\n"
                        "print('ready', flush=True); time.sleep(600)\n"], stdout=subprocess.PIPE, text=True)
    wait_line(server, "ready")
    clean = lab.add("lclean")
    return nat, tcp, clean


def _run(collections, inventory, tmp_path, tag):
    variables = {"conntrack_audit_report_dir": str(tmp_path / ("report-" + tag)),
                 "conntrack_audit_state_dir": str(tmp_path / ("state-" + tag))}
    proc = run_collection_playbook("audit", inventory, variables, collections_path=collections)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    with open(str(tmp_path / ("report-" + tag) / "conntrack-audit.json")) as handle:
        return json.load(handle)


def _textfiles(tmp_path, hosts, tag):
    return dict((ns.name, (tmp_path / ("textfile-" + tag) / ns.name / "nodeguard_conntrack.prom").read_text())
                for ns in hosts)


def _states(tmp_path, tag):
    directory = tmp_path / ("state-" + tag)
    return dict((name, _strip_times(json.loads((directory / name).read_text()))) for name in sorted(os.listdir(str(directory))))


def test_one_round_trip_audit_reports_what_the_legacy_role_reported(lab, tmp_path):
    hosts = _fleet(lab)
    nat, tcp, _clean = hosts
    inventories = {}
    for tag in ("legacy", "new"):
        hostvars = dict((ns.name, {"conntrack_audit_textfile_dir": str(tmp_path / ("textfile-" + tag) / ns.name)})
                        for ns in hosts)
        hostvars[tcp.name]["conntrack_audit_peak_flows"] = 5000000  # far above max: NGCA003 critical
        os.makedirs(str(tmp_path / tag))
        inventories[tag] = namespace_inventory(str(tmp_path / tag), hosts, hostvars)
    legacy = legacy_collection(str(tmp_path / "legacy-collections"))

    for round_no in (1, 2):
        old = _run(legacy, inventories["legacy"], tmp_path, "legacy")
        new = _run(COLLECTIONS_PATH, inventories["new"], tmp_path, "new")
        by_host = dict((h["host"], h) for h in new["hosts"])
        # the fleet is what the test meant it to be (so equality is not two empty reports agreeing)
        assert by_host[nat.name]["nat"]["dnat"] >= 12, by_host[nat.name]["nat"]
        assert "NGCT001" in [f["id"] for f in by_host[nat.name]["findings"]]
        assert {"proto": "tcp", "state": "ESTABLISHED", "count": 5} in by_host[tcp.name]["states"]
        assert by_host[tcp.name]["sizing"]["verdict"] == "below_peak"
        assert all(h["deltas"]["baseline"] is (round_no == 1) for h in new["hosts"])
        assert _differences(_strip_times(new), _strip_times(old)) == []
        assert _textfiles(tmp_path, hosts, "new") == _textfiles(tmp_path, hosts, "legacy")
        assert _states(tmp_path, "new") == _states(tmp_path, "legacy")
