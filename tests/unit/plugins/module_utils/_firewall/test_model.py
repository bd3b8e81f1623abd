"""Validation and normalisation of the firewall baseline model."""

import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.model import (
    FirewallModelError, normalise_model, normalise_port, normalise_network, normalise_prefix)


@pytest.mark.parametrize("model,field", [
    ({"input": {"services": [{"ports": [0]}]}}, "input.services[0].ports[0]"),
    ({"input": {"services": [{"ports": [65536]}]}}, "input.services[0].ports[0]"),
    ({"input": {"services": [{"ports": ["22a"]}]}}, "input.services[0].ports[0]"),
    ({"input": {"services": [{"ports": ["9000:80"]}]}}, "input.services[0].ports[0]"),
    ({"input": {"services": [{"ports": [True]}]}}, "input.services[0].ports[0]"),
    ({"input": {"services": [{"ports": []}]}}, "input.services[0].ports"),
    ({"input": {"services": [{"ports": [22], "sources": ["10.0.0.0/33"]}]}}, "input.services[0].sources[0]"),
    ({"input": {"services": [{"ports": [22], "sources": ["not-an-ip"]}]}}, "input.services[0].sources[0]"),
    ({"input": {"services": [{"ports": [22], "interfaces": ["eth0 ; rm"]}]}}, "input.services[0].interfaces[0]"),
    ({"input": {"services": [{"ports": [22], "interfaces": ["averyveryverylongname0"]}]}},
     "input.services[0].interfaces[0]"),
    ({"input": {"services": [{"ports": [22], "proto": "icmp"}]}}, "input.services[0].proto"),
    ({"input": {"services": [{"ports": [22], "comment": 'say "hi"'}]}}, "input.services[0].comment"),
    ({"input": {"services": [{"ports": [22], "colour": "red"}]}}, "input.services[0]"),
    ({"input": {"invalid_drop": {"in_interfaces": ["eth/0"]}}}, "input.invalid_drop.in_interfaces[0]"),
    ({"input": {"invalid_drop": {"log_rate": "fast"}}}, "input.invalid_drop.log_rate"),
    ({"input": {"final_action": "explode"}}, "input.final_action"),
    ({"forward": {"services": [{"ports": [80], "destinations": ["300.1.1.1"]}]}}, "forward.services[0].destinations[0]"),
    ({"notrack": [{"ports": [53], "direction": "sideways"}]}, "notrack[0].direction"),
    ({"policies": {"input": "REJECT"}}, "policies.input"),
    ({"families": ["ipv5"]}, "families[0]"),
    ({"prefix": "DOCKER-"}, "prefix"),
    ({"prefix": "1BAD"}, "prefix"),
    ({"prefix": "MUCH-TOO-LONG-PREFIX-"}, "prefix"),
])
def test_bad_input_names_the_field(model, field):
    with pytest.raises(FirewallModelError) as info:
        normalise_model(model)
    assert info.value.field == field
    assert str(info.value).startswith(field + ": ")


@pytest.mark.parametrize("value,expected", [(22, "22"), ("22", "22"), ("8000-8100", "8000:8100"),
                                            ("8000:8100", "8000:8100"), (" 443 ", "443")])
def test_ports_normalise_to_iptables_save_form(value, expected):
    assert normalise_port(value, "p") == expected


@pytest.mark.parametrize("value,expected", [
    ("10.1.2.3/8", ("ipv4", "10.0.0.0/8")), ("192.0.2.1", ("ipv4", "192.0.2.1/32")),
    ("2001:DB8:0::1", ("ipv6", "2001:db8::1/128")), ("2001:db8::/48", ("ipv6", "2001:db8::/48"))])
def test_networks_normalise_to_iptables_save_form(value, expected):
    assert normalise_network(value, "n") == expected


def test_defaults_are_safe_on_a_fresh_host():
    model = normalise_model({})
    assert model["prefix"] == "NG-CT-"
    assert model["families"] == ["ipv4", "ipv6"]
    assert model["input"]["enabled"] and model["input"]["invalid_drop"]["enabled"]
    assert model["input"]["final_action"] == "return"
    assert not model["forward"]["enabled"] and not model["forward"]["invalid_drop"]["enabled"]
    assert model["policies"] == {} and model["notrack"] == []


def test_module_argument_spec_shape_is_accepted():
    # what AnsibleModule hands over: every suboption present, unset ones as None
    params = {"prefix": "NG-CT-", "families": ["ipv4"], "policies": {"input": None, "forward": "DROP", "output": None},
              "input": {"enabled": True, "loopback": True, "icmp": True, "icmp_echo": False, "final_action": "drop",
                        "invalid_drop": None,
                        "services": [{"name": "ssh", "proto": "tcp", "ports": [22], "sources": None,
                                      "interfaces": None, "comment": None}]},
              "forward": None, "notrack": None}
    model = normalise_model(params)
    assert model["policies"] == {"FORWARD": "DROP"}
    assert model["input"]["services"][0]["comment"] == "ssh"
    assert normalise_prefix(None) == "NG-CT-"


def test_notrack_local_ports_and_forwarded_are_validated():
    import pytest as _pytest
    with _pytest.raises(FirewallModelError) as info:
        normalise_model({"notrack": [{"ports": [53], "local_ports": [1000]}]})
    assert info.value.field == "notrack[0].local_ports"
    with _pytest.raises(FirewallModelError) as info:
        normalise_model({"notrack": [{"ports": [53], "forwarded": True, "destinations": ["10.0.0.0/8"]}]})
    assert info.value.field == "notrack[0].forwarded"
    with _pytest.raises(FirewallModelError) as info:
        normalise_model({"forward": {"enabled": True}, "notrack": [{"ports": [53], "forwarded": True}]})
    assert info.value.field == "notrack[0].destinations"
    item = normalise_model({"notrack": [{"ports": [53], "direction": "both"}]})["notrack"][0]
    assert item["local_ports"] == ["32768:60999"] and item["forwarded"] is False


def test_log_rate_is_normalised_as_libxt_limit_prints_it_and_range_checked():
    import pytest as _pytest
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall.model import normalise_rate
    cases = {"5/min": "5/min", "60/min": "1/sec", "120/min": "2/sec", "60/hour": "1/min", "24/day": "1/hour",
             "1/second": "1/sec", "10000/sec": "10000/sec", "9999/s": "10000/sec", "3600/hour": "1/sec",
             "8/day": "8/day", "7/h": "7/hour", "1/m": "1/min"}
    assert dict((rate, normalise_rate(rate, "f")) for rate in cases) == cases
    for rate, word in (("20000/sec", "faster"), ("10001/sec", "faster"), ("7/day", "too slow"), ("1/day", "too slow")):
        with _pytest.raises(FirewallModelError) as info:
            normalise_model({"input": {"invalid_drop": {"log": True, "log_rate": rate}}})
        assert info.value.field == "input.invalid_drop.log_rate" and word in str(info.value), rate
