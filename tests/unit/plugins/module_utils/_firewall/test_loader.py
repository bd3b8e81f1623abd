"""The boot-time loader's merge (live owned state removed, rules file loaded, in one transaction per table)."""

import json

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import loader

LIVE = """*filter
:INPUT ACCEPT [0:0]
:DOCKER - [0:0]
:NG-CT-INPUT - [0:0]
:NG-CT-INPUT-INVALID - [0:0]
-A INPUT -j DOCKER
-A INPUT -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-INPUT
-A NG-CT-INPUT -j NG-CT-INPUT-INVALID
COMMIT
*raw
:PREROUTING ACCEPT [0:0]
:NG-CT-PREROUTING - [0:0]
-A PREROUTING -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-PREROUTING
COMMIT
"""
RULES = """*filter
:NG-CT-INPUT - [0:0]
-A NG-CT-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-I INPUT 1 -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-INPUT
COMMIT
"""


def _loader():
    namespace = {"__name__": "loader_under_test"}
    exec(compile(loader.LOADER_SOURCE, "loader", "exec"), namespace)  # the script as written onto the node
    return namespace


def test_build_removes_owned_state_and_loads_rules_only():
    script = _loader()["build"](LIVE, RULES, "NG-CT-").splitlines()
    assert script[:7] == [
        "*filter", ":NG-CT-INPUT - [0:0]", ":NG-CT-INPUT-INVALID - [0:0]",
        '-D INPUT -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-INPUT',
        "-A NG-CT-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        '-I INPUT 1 -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-INPUT',
        "-X NG-CT-INPUT-INVALID"]
    assert script[7:] == ["COMMIT", "*raw", ":NG-CT-PREROUTING - [0:0]",
                          '-D PREROUTING -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-PREROUTING',
                          "-X NG-CT-PREROUTING", "COMMIT"]
    assert not any("DOCKER" in line for line in script)


def test_build_on_a_fresh_boot_and_with_nothing_to_do():
    build = _loader()["build"]
    fresh = build("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", RULES, "NG-CT-")
    assert "-D " not in fresh and "-X " not in fresh and "-I INPUT 1" in fresh
    assert build("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "", "NG-CT-") == ""


def test_config_and_unit():
    config = json.loads(loader.render_config("NG-CT-", {"ipv4": {"save": "/sbin/iptables-save",
                                                                 "restore": "/sbin/iptables-restore",
                                                                 "rules": "/etc/x"}}))
    assert config["prefix"] == "NG-CT-" and config["families"]["ipv4"]["restore"] == "/sbin/iptables-restore"
    unit = loader.render_unit("/usr/bin/python3", "/usr/local/sbin/load", "/etc/nodeguard/conntrack/firewall.json")
    assert "Before=network-pre.target" in unit and "Wants=network-pre.target" in unit
    assert "ExecStart=/usr/bin/python3 /usr/local/sbin/load /etc/nodeguard/conntrack/firewall.json" in unit
    assert "Type=oneshot" in unit and "RemainAfterExit=yes" in unit


def test_a_chain_that_only_starts_with_the_prefix_is_not_owned():
    live = """*filter
:INPUT ACCEPT [0:0]
:SSH-GUARD - [0:0]
:SSH-INPUT - [0:0]
-A INPUT -j SSH-GUARD
-A INPUT -m comment --comment "nodeguard.conntrack baseline" -j SSH-INPUT
-A SSH-GUARD -s 203.0.113.9/32 -j DROP
COMMIT
"""
    script = _loader()["build"](live, "", "SSH-")
    assert "SSH-GUARD" not in script and "-X SSH-INPUT" in script


def test_rollback_puts_a_policy_back_only_while_it_is_still_the_one_set():
    rules = "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n"
    build = _loader()["build"]
    still = build("*filter\n:INPUT DROP [0:0]\nCOMMIT\n", rules, "NG-CT-", {"filter": {"INPUT": "DROP"}})
    assert ":INPUT ACCEPT [0:0]" in still.splitlines()
    # another tool changed it meanwhile (here: to ACCEPT then ... any other value): left alone
    other = build("*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "*filter\n:INPUT DROP [0:0]\nCOMMIT\n", "NG-CT-",
                  {"filter": {"INPUT": "ACCEPT"}})
    assert ":INPUT DROP [0:0]" in other.splitlines()
    moved = build("*filter\n:INPUT DROP [0:0]\nCOMMIT\n", "*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "NG-CT-",
                  {"filter": {"INPUT": "ACCEPT"}})
    assert ":INPUT" not in moved


def test_unit_runs_after_full_table_restores_with_a_system_interpreter():
    unit = loader.render_unit("/usr/bin/python3", "/usr/local/sbin/load", "/etc/x.json")
    after = [line for line in unit.splitlines() if line.startswith("After=")][0].split("=", 1)[1].split()
    for service in ("netfilter-persistent.service", "iptables.service", "ip6tables.service", "nftables.service"):
        assert service in after
    assert "Before=network-pre.target shutdown.target" in unit
    # a system Python wins over the (virtualenv) interpreter that ran the module
    assert loader.boot_interpreter({"/usr/bin/python3"}.__contains__, "/opt/venv/bin/python", True) == "/usr/bin/python3"
    assert loader.boot_interpreter({"/usr/libexec/platform-python"}.__contains__, "/x/python", True) == \
        "/usr/libexec/platform-python"
    assert loader.boot_interpreter(set().__contains__, "/usr/bin/python3.12", False) == "/usr/bin/python3.12"
    assert loader.boot_interpreter(set().__contains__, "/opt/venv/bin/python", True) is None
