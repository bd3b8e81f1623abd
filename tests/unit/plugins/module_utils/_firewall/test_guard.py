"""The lockout guard follows the SSH session's packets through the filter table as it will be after the apply."""

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import guard
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import render
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.model import normalise_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.save_parser import owned_state, parse_save

ENDPOINT = ("192.0.2.10", 50000, "192.0.2.1", 22)
EMPTY = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"


def _check(live_text, params, state="present", endpoint=ENDPOINT):
    model = normalise_model(params)
    live = parse_save(live_text)
    policy_chains = render.managed_policy_chains(model)
    current = owned_state(live, model["prefix"], policy_chains)
    desired = render.desired_state(model, "ipv4") if state == "present" else render.absent_state(model)
    return guard.check(live, current, desired, endpoint)


def _applied(params):
    """iptables-save text of a host where ``params`` is applied (jumps appended: same order as inserted first)."""
    model = normalise_model(params)
    text = render.render_restore(render.desired_state(model, "ipv4")).replace("-I INPUT 1 ", "-A INPUT ")
    return EMPTY.replace("COMMIT\n", "") + text.split("*filter\n", 1)[1]


def test_output_drop_policy_without_output_accept_is_refused():
    problem = _check(EMPTY, {"policies": {"output": "DROP"}})
    assert problem and problem[0] == "OUTPUT" and "dropped" in problem[1]


def test_turning_input_off_under_a_live_drop_policy_is_refused():
    live = _applied({"input": {"services": [{"ports": [22]}]}}).replace(":INPUT ACCEPT", ":INPUT DROP")
    assert _check(live, {"input": {"services": [{"ports": [22]}]}}) is None
    problem = _check(live, {"input": {"enabled": False}})
    assert problem and problem[0] == "INPUT"
    # state: absent removes the chain and its ESTABLISHED accept as well
    assert _check(live, {"input": {"services": [{"ports": [22]}]}}, state="absent")[0] == "INPUT"


def test_final_drop_needs_the_ssh_port_from_the_controller():
    assert _check(EMPTY, {"input": {"final_action": "drop", "services": [{"ports": [443]}]}})[1].startswith("new")
    allowed = {"input": {"final_action": "drop", "services": [{"ports": ["20:25"], "sources": ["192.0.2.0/24"]}]}}
    assert _check(EMPTY, allowed) is None
    assert _check(EMPTY, allowed, endpoint=("198.51.100.1", 50000, "192.0.2.1", 22)) is not None
    assert _check(EMPTY, {}) is None
    assert _check(EMPTY, {"policies": {"input": "DROP"}})[0] == "INPUT"


def test_foreign_rules_jumps_and_returns_are_followed():
    ufw_like = """*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT DROP [0:0]
:ufw-user-input - [0:0]
:ufw-out - [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -j ufw-user-input
-A OUTPUT -j ufw-out
-A ufw-user-input -s 203.0.113.0/24 -j RETURN
-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT
-A ufw-out -m state --state RELATED,ESTABLISHED -j ACCEPT
COMMIT
"""
    assert _check(ufw_like, {"input": {"final_action": "return"}}) is None
    assert _check(ufw_like, {}, endpoint=("203.0.113.5", 50000, "192.0.2.1", 22))[1].startswith("new")
    # a rule the guard cannot decide (recent) now decides where an accept was certain before: refused
    recent = EMPTY.replace("COMMIT", "-A INPUT -p tcp -m tcp --dport 22 -m recent --update --seconds 60 -j DROP\n"
                                     "COMMIT")
    assert _check(recent, {}) is None  # unchanged uncertainty that was there before is not ours to refuse
    assert _check(EMPTY, {"input": {"final_action": "drop", "services": [{"ports": [22]}]}}) is None


def test_rule_match_reads_the_common_matches():
    packet = {"proto": "tcp", "src": "192.0.2.10", "dst": "192.0.2.1", "sport": 50000, "dport": 22,
              "state": "NEW", "dst_local": True}
    assert guard.rule_match("-s 192.0.2.0/24 -p tcp -m multiport --dports 21:23,80 -j ACCEPT", packet) is True
    assert guard.rule_match("! -s 192.0.2.0/24 -j DROP", packet) is False
    assert guard.rule_match("-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT", packet) is False
    assert guard.rule_match("-p tcp -m tcp --syn -j ACCEPT", packet) is True
    assert guard.rule_match("-i eth0 -j ACCEPT", packet) is None
    assert guard.rule_match("-i lo -j ACCEPT", packet) is False
    assert guard.rule_match('-m comment --comment "a b" -m addrtype --dst-type LOCAL -j ACCEPT', packet) is True
    assert guard.rule_match("-m recent --rcheck -j DROP", packet) is None


def test_ssh_connection_found_in_an_ancestor_when_sudo_dropped_it():
    environs = {40: b"HOME=/root\0", 30: b"PATH=/bin\0SSH_CONNECTION=::ffff:192.0.2.10 50000 ::ffff:192.0.2.1 22\0"}
    parents = {50: 40, 40: 30, 30: 1}
    found = guard.find_ssh_connection({}, environs.get, parents.get, 50)
    assert found == ("192.0.2.10", 50000, "192.0.2.1", 22)
    assert guard.find_ssh_connection({"SSH_CONNECTION": "2001:db8::1 1 2001:db8::2 2222"}, environs.get,
                                     parents.get, 50) == ("2001:db8::1", 1, "2001:db8::2", 2222)
    assert guard.find_ssh_connection({}, {}.get, {50: 1}.get, 50) is None
