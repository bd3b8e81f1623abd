"""iptables_baseline for real inside network namespaces: four-run idempotence, the iptables-save read-back form,
coexistence with Docker/kube-proxy/fail2ban chains, policies, removal, input validation and the lockout guard.
Both backends (iptables-nft and iptables-legacy), both families."""

import subprocess
import time

import pytest

from firewall_lab import BACKENDS, FAMILIES, foreign, module, owned, rule_lines, save, seed_foreign

MODEL = {
    "input": {
        "services": [
            {"name": "ssh", "ports": [22]},
            {"name": "web", "ports": [80, 443, "8000-8100"], "sources": ["10.1.2.3/8", "2001:db8::/48"],
             "comment": "web servers"},
        ],
        "invalid_drop": {"in_interfaces": ["veth+"], "exempt_sources": ["192.0.2.1"], "log": True},
    },
    "notrack": [{"name": "dns", "proto": "udp", "ports": [53]}],
}
CHANGED_MODEL = {
    "input": {"services": [{"name": "ssh", "ports": [2222]}], "final_action": "reject"},
    "forward": {"enabled": True, "accept_dnat": True, "invalid_drop": {"enabled": True, "in_interfaces": ["eth9"]}},
}


def _args(backend, model, **extra):
    return dict(model, backend=backend, state_dir="/tmp/ngct-unused", **extra)


@pytest.mark.parametrize("backend", BACKENDS)
def test_four_runs_and_iptables_save_form(lab, backend):
    ns = lab.add("fw", conntrack_rule=False)
    results = [module(ns, "iptables_baseline", _args(backend, MODEL), check_mode=check, diff=True)
               for check in (True, False, True, False)]
    for result in results:
        assert result["_rc"] == 0, result
    assert [r["changed"] for r in results] == [True, True, False, False]
    assert results[0]["diff"] == results[1]["diff"]
    assert results[2]["diff"]["before"] == results[2]["diff"]["after"]
    v4, v6 = save(ns, backend, "ipv4"), save(ns, backend, "ipv6")
    # the rendered form is exactly what iptables-save prints back
    assert "-A NG-CT-INPUT -p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -m comment --comment ssh -j ACCEPT" in v4
    assert ('-A NG-CT-INPUT -s 10.0.0.0/8 -p tcp -m multiport --dports 80,443,8000:8100 -m conntrack --ctstate NEW '
            '-m comment --comment "web servers" -j ACCEPT') in v4
    assert "-s 2001:db8::/48 -p tcp -m multiport --dports 80,443,8000:8100" in v6
    assert "-A NG-CT-INPUT-INVALID -s 192.0.2.1/32 -j RETURN" in v4
    assert "192.0.2.1" not in v6
    # ESTABLISHED first after loopback, the jump is the first rule of INPUT and exists once
    for text in (v4, v6):
        lines = rule_lines(text)
        input_rules = [line for line in lines if line.startswith("-A INPUT ")]
        assert input_rules[0] == '-A INPUT -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-INPUT'
        assert len([line for line in lines if line.endswith("-j NG-CT-INPUT")]) == 1
        chain = [line for line in lines if line.startswith("-A NG-CT-INPUT ")]
        assert chain[:2] == ["-A NG-CT-INPUT -i lo -j ACCEPT",
                             "-A NG-CT-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
        assert "-A PREROUTING -m comment --comment \"nodeguard.conntrack baseline\" -j NG-CT-PREROUTING" in lines
    # the other backend stayed empty
    other = "legacy" if backend == "nft" else "nft"
    for family in FAMILIES:
        assert owned(save(ns, other, family)) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_other_software_chains_stay_byte_identical(lab, backend):
    ns = lab.add("fw", conntrack_rule=False)
    seed_foreign(ns, backend)
    before = dict((family, foreign(save(ns, backend, family))) for family in FAMILIES)
    assert any(line.startswith(":KUBE-NOTRACK") for line in before["ipv4"])

    def check_foreign():
        for family in FAMILIES:
            assert foreign(save(ns, backend, family)) == before[family], family

    steps = [(MODEL, "present", True), (MODEL, "present", False), (CHANGED_MODEL, "present", True),
             (CHANGED_MODEL, "present", False), (MODEL, "present", True), (CHANGED_MODEL, "absent", True),
             (CHANGED_MODEL, "absent", False)]
    for model, state, changed in steps:
        result = module(ns, "iptables_baseline", _args(backend, model, state=state))
        assert result["_rc"] == 0, result
        assert result["changed"] is changed, (state, result)
        check_foreign()
    for family in FAMILIES:
        assert owned(save(ns, backend, family)) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_policy_opt_in_and_absent_resets_it(lab, backend):
    ns = lab.add("fw", conntrack_rule=False)
    model = dict(CHANGED_MODEL, policies={"forward": "DROP"})
    result = module(ns, "iptables_baseline", _args(backend, model))
    assert result["_rc"] == 0 and result["changed"], result
    for family in FAMILIES:
        lines = rule_lines(save(ns, backend, family))
        assert ":FORWARD DROP" in lines and ":INPUT ACCEPT" in lines
    assert module(ns, "iptables_baseline", _args(backend, model))["changed"] is False
    result = module(ns, "iptables_baseline", _args(backend, model, state="absent"))
    assert result["_rc"] == 0 and result["changed"], result
    for family in FAMILIES:
        lines = rule_lines(save(ns, backend, family))
        assert ":FORWARD ACCEPT" in lines and owned(save(ns, backend, family)) == []


def test_bad_input_fails_before_anything_changes(lab):
    ns = lab.add("fw", conntrack_rule=False)
    seed_foreign(ns, "nft")
    before = save(ns, "nft", "ipv4")
    cases = [
        ({"input": {"services": [{"ports": [70000]}]}}, "input.services[0].ports[0]"),
        ({"input": {"services": [{"ports": [22], "sources": ["10.0.0.300/8"]}]}}, "input.services[0].sources[0]"),
        ({"input": {"invalid_drop": {"in_interfaces": ["eth0/1"]}}}, "input.invalid_drop.in_interfaces[0]"),
        ({"prefix": "KUBE-"}, "prefix"),
    ]
    for model, field in cases:
        result = module(ns, "iptables_baseline", _args("nft", model))
        assert result.get("failed") is True, result
        assert result["msg"].startswith(field + ":"), result["msg"]
    result = module(ns, "iptables_baseline", _args("nft", {"input": {"services": [{"proto": "icmp", "ports": [1]}]}}))
    assert result.get("failed") is True and "proto" in result["msg"], result
    assert rule_lines(save(ns, "nft", "ipv4")) == rule_lines(before)


def test_lockout_guard_refuses_to_drop_the_controllers_ssh(lab):
    ns = lab.add("fw", conntrack_rule=False)
    env = {"SSH_CONNECTION": "192.0.2.10 50000 192.0.2.1 22"}
    model = {"input": {"services": [{"ports": [443]}], "final_action": "drop"}}
    result = module(ns, "iptables_baseline", _args("nft", model), env=env)
    assert result.get("failed") is True and "port 22" in result["msg"], result
    assert owned(save(ns, "nft", "ipv4")) == []
    # allowed from the controller's network: accepted
    model["input"]["services"].append({"ports": [22], "sources": ["192.0.2.0/24"]})
    result = module(ns, "iptables_baseline", _args("nft", model), env=env)
    assert result["_rc"] == 0 and result["changed"], result


def test_warns_when_the_other_backend_holds_rules(lab):
    ns = lab.add("fw")  # the lab's own conntrack rule lives in the nft backend
    result = module(ns, "iptables_baseline", _args("legacy", MODEL))
    assert result["_rc"] == 0, result
    # ansible-core 2.19 returns structured warnings when a module runs outside a play: compare the text
    assert "nft backend also holds ipv4 rules" in str(result.get("warnings")), result
    assert owned(save(ns, "nft", "ipv4")) == []
    assert owned(save(ns, "legacy", "ipv4"))


SERVER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in (9000, 9001):
    for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        s = socket.socket(fam)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind((addr, port)); s.listen(64); sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        conn, _ = key.fileobj.accept(); conn.close()
"""


def _connects(ns, address, port):
    code = ("import socket,sys\ntry:\n socket.create_connection((%r, %d), timeout=2).close(); print('yes')\n"
            "except OSError: print('no')" % (address, port))
    return ns.python(code).stdout.strip() == "yes"


@pytest.mark.parametrize("backend", BACKENDS)
def test_only_declared_ports_connect(lab, backend):
    client, server = lab.add("cl"), lab.add("sv", conntrack_rule=False)
    lab.link(client, "10.91.0.1/24", server, "10.91.0.2/24")
    lab.link(client, "fd00:91::1/64", server, "fd00:91::2/64")
    proc = server.spawn(["python3", "-c", SERVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    model = {"input": {"services": [{"ports": [9000]}], "final_action": "drop"}}
    result = module(server, "iptables_baseline", _args(backend, model))
    assert result["_rc"] == 0 and result["changed"], result
    time.sleep(0.2)
    assert _connects(client, "10.91.0.2", 9000) and _connects(client, "fd00:91::2", 9000)
    assert not _connects(client, "10.91.0.2", 9001) and not _connects(client, "fd00:91::2", 9001)
    assert module(server, "iptables_baseline", _args(backend, model, state="absent"))["changed"]
    assert _connects(client, "10.91.0.2", 9001) and _connects(client, "fd00:91::2", 9001)


def test_auto_backend_follows_the_plain_iptables_command(lab):
    ns = lab.add("fw", conntrack_rule=False)
    version = ns.run(["iptables", "-V"]).stdout
    expected = "nft" if "nf_tables" in version else "legacy"
    result = module(ns, "iptables_baseline", {"backend": "auto", "state_dir": "/tmp/ngct-unused"})
    assert result["_rc"] == 0 and result["backend"] == expected, result
    assert owned(save(ns, expected, "ipv4")) and owned(save(ns, expected, "ipv6"))
