"""log_rate against real iptables: every unit and the boundaries of the range are applied and read back equal (a
second run changes nothing) on both backends, and rates iptables or the kernel refuse are refused by the module,
naming the field, before anything changes. The INVALID log rule is installed; no packet is needed to read it."""

import pytest

from firewall_lab import BACKENDS, module, owned, save

ACCEPTED = ["5/min", "60/min", "120/min", "60/hour", "24/day", "1/second", "10000/sec", "9999/s", "3600/hour",
            "86400/day", "8/day", "7/h", "1/m", "59/min", "61/min", "1/hour", "100/d"]
REFUSED = ["20000/sec", "10001/sec", "7/day", "1/day"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_unit_and_boundary_reads_back_equal(lab, backend):
    ns = lab.add("fw", False)
    for rate in ACCEPTED:
        args = {"backend": backend, "families": ["ipv4"], "state_dir": "/tmp/ngct-unused",
                "input": {"invalid_drop": {"log": True, "log_rate": rate}}}
        first = module(ns, "iptables_baseline", args)
        assert first["_rc"] == 0, (rate, first)
        second = module(ns, "iptables_baseline", args)
        assert second["_rc"] == 0 and second["changed"] is False, (rate, second)
    for rate in REFUSED:
        before = owned(save(ns, backend, "ipv4"))
        result = module(ns, "iptables_baseline", {"backend": backend, "families": ["ipv4"],
                                                  "input": {"invalid_drop": {"log": True, "log_rate": rate}}})
        assert result.get("failed") is True and result["msg"].startswith("input.invalid_drop.log_rate:"), result
        assert owned(save(ns, backend, "ipv4")) == before
