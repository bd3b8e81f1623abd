"""The iptables_baseline_render filter: a preview of the rules file, errors naming the field."""

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.nodeguard.conntrack.plugins.filter.iptables_baseline_render import FilterModule


def test_filter_renders_the_rules_file():
    render = FilterModule().filters()["iptables_baseline_render"]
    text = render({"input": {"services": [{"name": "ssh", "ports": [22]}]}}, "ipv6")
    assert text.startswith("*filter\n:NG-CT-INPUT - [0:0]\n")
    assert "-p ipv6-icmp -m icmp6 --icmpv6-type 135 -m hl --hl-eq 255 -j ACCEPT" in text
    assert '-I INPUT 1 -m comment --comment "nodeguard.conntrack baseline" -j NG-CT-INPUT' in text


@pytest.mark.parametrize("model,family,needle", [
    ({"input": {"services": [{"ports": [99999]}]}}, "ipv4", "input.services[0].ports[0]"),
    ([], "ipv4", "must be a dict"),
    ({}, "ipv7", "family"),
])
def test_filter_errors(model, family, needle):
    with pytest.raises(AnsibleFilterError) as info:
        FilterModule().filters()["iptables_baseline_render"](model, family)
    assert needle in str(info.value)
