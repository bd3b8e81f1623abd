"""Rendering the model to owned states and iptables-restore text."""

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import render
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.model import normalise_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.save_parser import owned_state, parse_save

JUMP = '-m comment --comment "nodeguard.conntrack baseline" -j NG-CT-INPUT'


def _state(params, family="ipv4"):
    return render.desired_state(normalise_model(params), family)


def test_established_first_and_one_jump_at_position_one():
    state = _state({"input": {"services": [{"ports": [22]}]}})
    rules = state["filter"]["chains"]["NG-CT-INPUT"]
    assert rules[:2] == ["-i lo -j ACCEPT", "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    assert state["filter"]["jumps"] == [("INPUT", 1, JUMP)]
    assert rules[-1] == "-p tcp -m tcp --dport 22 -m conntrack --ctstate NEW -j ACCEPT"
    assert "FORWARD" not in [j[0] for j in state["filter"]["jumps"]]
    assert "raw" not in state


def test_invalid_drop_scoped_with_exemptions_and_log():
    state = _state({"input": {"invalid_drop": {"in_interfaces": ["eth0", "wg+"], "sources": ["10.0.0.0/8"],
                                               "exempt_sources": ["10.9.0.0/16", "fd00::/8"],
                                               "exempt_interfaces": ["lo"], "log": True}}})
    rules = state["filter"]["chains"]["NG-CT-INPUT"]
    assert "-s 10.0.0.0/8 -i eth0 -m conntrack --ctstate INVALID -j NG-CT-INPUT-INVALID" in rules
    assert "-s 10.0.0.0/8 -i wg+ -m conntrack --ctstate INVALID -j NG-CT-INPUT-INVALID" in rules
    assert state["filter"]["chains"]["NG-CT-INPUT-INVALID"] == [
        "-s 10.9.0.0/16 -j RETURN", "-i lo -j RETURN",
        '-m limit --limit 5/min --limit-burst 10 -j LOG --log-prefix "ngct-invalid: "', "-j DROP"]
    # sources only of IPv4: no INVALID drop at all in IPv6 (never widened to everything)
    v6 = _state({"input": {"invalid_drop": {"sources": ["10.0.0.0/8"]}}}, "ipv6")
    assert "NG-CT-INPUT-INVALID" not in v6["filter"]["chains"]
    assert not any("INVALID" in rule for rule in v6["filter"]["chains"]["NG-CT-INPUT"])


def test_service_of_one_family_is_not_opened_in_the_other():
    params = {"input": {"services": [{"ports": [5432], "sources": ["10.0.0.0/8"]}]}}
    assert not any("5432" in r for r in _state(params, "ipv6")["filter"]["chains"]["NG-CT-INPUT"])
    assert any("-s 10.0.0.0/8" in r and "5432" in r for r in _state(params)["filter"]["chains"]["NG-CT-INPUT"])


def test_multiport_groups_respect_the_fifteen_slot_limit():
    state = _state({"input": {"services": [{"ports": list(range(1, 15)) + ["100:200", 300]}]}})
    rules = [r for r in state["filter"]["chains"]["NG-CT-INPUT"] if "multiport" in r or "--dport" in r]
    assert rules[0].count(",") == 13 and "100:200" in rules[1] and "300" in rules[1]


def test_comment_quoting_follows_iptables_save():
    assert render.save_string("ssh") == "ssh"
    assert render.save_string("web servers") == '"web servers"'
    assert render.save_string("a.b") == '"a.b"'


def test_forward_and_notrack_and_policies():
    state = _state({"forward": {"enabled": True, "accept_dnat": True, "final_action": "reject"},
                    "notrack": [{"proto": "udp", "ports": [53], "direction": "both", "interfaces": ["eth1"]}],
                    "policies": {"forward": "DROP"}})
    forward = state["filter"]["chains"]["NG-CT-FORWARD"]
    assert forward == ["-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", "-m conntrack --ctstate DNAT -j RETURN",
                       "-j REJECT --reject-with icmp-port-unreachable"]
    # DNATed flows are accepted only at the end of FORWARD, after DOCKER-USER and every other chain there
    assert state["filter"]["chains"]["NG-CT-FORWARD-DNAT"] == ["-m conntrack --ctstate DNAT -j ACCEPT"]
    assert ("FORWARD", -1, '-m comment --comment "nodeguard.conntrack baseline" -j NG-CT-FORWARD-DNAT') in \
        state["filter"]["jumps"]
    text = render.render_restore(state)
    assert '-A FORWARD -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-FORWARD-DNAT' in text
    mark = '-m comment --comment "nodeguard.conntrack baseline" -j '
    live = owned_state(parse_save("*filter\n:FORWARD DROP [0:0]\n:DOCKER-USER - [0:0]\n"
                                  "-A FORWARD %sNG-CT-FORWARD\n-A FORWARD -j DOCKER-USER\n-A FORWARD %sNG-CT-FORWARD-DNAT\n"
                                  "COMMIT\n" % (mark, mark)), "NG-CT-")
    assert sorted(live["filter"]["jumps"]) == sorted(j for j in state["filter"]["jumps"] if j[0] == "FORWARD")
    assert state["filter"]["policies"] == {"FORWARD": "DROP"}
    raw = state["raw"]
    assert raw["chains"]["NG-CT-PREROUTING"] == [
        "-i eth1 -p udp -m addrtype --dst-type LOCAL -m udp --dport 53 -j CT --notrack",
        "-i eth1 -p udp -m addrtype --dst-type LOCAL -m udp --sport 53 --dport 32768:60999 -j CT --notrack"]
    assert raw["chains"]["NG-CT-OUTPUT"] == ["-o eth1 -p udp -m udp --sport 53 -j CT --notrack",
                                             "-o eth1 -p udp -m udp --sport 32768:60999 --dport 53 -j CT --notrack"]
    assert sorted(j[0] for j in raw["jumps"]) == ["OUTPUT", "PREROUTING"]
    v6 = _state({"forward": {"enabled": True, "final_action": "reject"}}, "ipv6")
    assert v6["filter"]["chains"]["NG-CT-FORWARD"][-1] == "-j REJECT --reject-with icmp6-port-unreachable"


def test_apply_script_touches_only_owned_names():
    current = owned_state(parse_save("""*filter
:INPUT ACCEPT [0:0]
:DOCKER - [0:0]
:NG-CT-INPUT - [0:0]
:NG-CT-FORWARD-INVALID - [0:0]
-A INPUT -j DOCKER
-A INPUT -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-INPUT
-A NG-CT-INPUT -j NG-CT-FORWARD-INVALID
COMMIT
"""), "NG-CT-")
    desired = _state({"input": {"invalid_drop": {"enabled": False}}})
    script = render.render_apply(current, desired)
    lines = script.splitlines()
    assert lines[0] == "*filter" and lines[-1] == "COMMIT"
    assert ":NG-CT-INPUT - [0:0]" in lines and ":NG-CT-FORWARD-INVALID - [0:0]" in lines
    assert "-D INPUT " + JUMP in lines and "-I INPUT 1 " + JUMP in lines
    assert lines.index("-D INPUT " + JUMP) < lines.index("-I INPUT 1 " + JUMP)
    assert "-X NG-CT-FORWARD-INVALID" in lines
    assert not any("DOCKER" in line for line in lines)
    assert not any(line.startswith(":INPUT") for line in lines)


def test_states_compare_ignoring_chain_order_and_diff_text():
    state = _state({"input": {"services": [{"ports": [22]}]}})
    text = render.render_restore(state).replace("-I INPUT 1 ", "-A INPUT ")
    live = owned_state(parse_save(text), "NG-CT-")
    assert render.states_equal(live, state)
    assert not render.states_equal(live, _state({"input": {"services": [{"ports": [23]}]}}))
    moved = dict(live, filter=dict(live["filter"], jumps=[("INPUT", 2, JUMP)]))
    assert not render.states_equal(moved, state)
    assert "-I INPUT 1 " + JUMP in render.state_text(state)
    assert render.states_equal({}, render.absent_state(normalise_model({})))


def test_outgoing_notrack_is_bounded_to_the_client_ports_and_never_admits_a_syn():
    state = _state({"notrack": [{"proto": "tcp", "ports": [443], "direction": "out"}]})
    accept = [r for r in state["filter"]["chains"]["NG-CT-INPUT"] if "UNTRACKED" in r]
    assert accept == ["-p tcp -m tcp --sport 443 --dport 32768:60999 ! --tcp-flags FIN,SYN,RST,ACK SYN "
                      "-m conntrack --ctstate UNTRACKED -j ACCEPT"]
    state = _state({"notrack": [{"proto": "udp", "ports": [53, 853], "direction": "out", "local_ports": [5353]}]})
    assert state["raw"]["chains"]["NG-CT-PREROUTING"] == [
        "-p udp -m addrtype --dst-type LOCAL -m udp --dport 5353 -m multiport --sports 53,853 -j CT --notrack"]


def test_forwarded_notrack_accepts_untracked_in_forward_only():
    state = _state({"forward": {"enabled": True},
                    "notrack": [{"proto": "udp", "ports": [4789], "forwarded": True, "destinations": ["10.5.0.0/16"]}]})
    assert state["raw"]["chains"]["NG-CT-PREROUTING"] == [
        "-d 10.5.0.0/16 -p udp -m udp --dport 4789 -j CT --notrack",
        "-s 10.5.0.0/16 -p udp -m udp --sport 4789 -j CT --notrack"]
    assert "NG-CT-OUTPUT" not in state["raw"]["chains"]
    assert [r for r in state["filter"]["chains"]["NG-CT-FORWARD"] if "UNTRACKED" in r] == [
        "-d 10.5.0.0/16 -p udp -m udp --dport 4789 -m conntrack --ctstate UNTRACKED -j ACCEPT",
        "-s 10.5.0.0/16 -p udp -m udp --sport 4789 -m conntrack --ctstate UNTRACKED -j ACCEPT"]
    assert not any("UNTRACKED" in r for r in state["filter"]["chains"]["NG-CT-INPUT"])


def test_udplite_uses_multiport_because_it_has_no_match_of_its_own():
    state = _state({"input": {"services": [{"proto": "udplite", "ports": [5000]}]}})
    assert "-p udplite -m multiport --dports 5000 -m conntrack --ctstate NEW -j ACCEPT" in \
        state["filter"]["chains"]["NG-CT-INPUT"]


def test_absent_resets_only_policies_still_as_the_model_set_them():
    model = normalise_model({"policies": {"input": "DROP", "forward": "ACCEPT"}})
    current = {"filter": {"chains": {}, "jumps": [], "policies": {"INPUT": "DROP", "FORWARD": "DROP"}}}
    assert render.absent_state(model, current)["filter"]["policies"] == {"INPUT": "ACCEPT", "FORWARD": "DROP"}
    assert render.absent_state(model)["filter"]["policies"] == {"INPUT": "ACCEPT", "FORWARD": "ACCEPT"}
