"""The audit and report filters: registered under their names, errors as AnsibleFilterError naming the field."""
import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.nodeguard.conntrack.plugins.filter import conntrack_audit_evaluate as f_eval
from ansible_collections.nodeguard.conntrack.plugins.filter import conntrack_audit_fleet as f_fleet
from ansible_collections.nodeguard.conntrack.plugins.filter import conntrack_report_render as f_render
from ansible_collections.nodeguard.conntrack.plugins.filter import conntrack_report_textfile as f_text

FACTS = {"available": True, "limits": {"max": 100, "count": 80, "usage_pct": 80.0, "buckets": 64},
         "counters": {"drop": 0}, "counters_source": "procfs", "environment": {}}


@pytest.mark.parametrize("module, name", [
    (f_eval, "conntrack_audit_evaluate"), (f_fleet, "conntrack_audit_fleet"),
    (f_render, "conntrack_report_render"), (f_text, "conntrack_report_textfile"),
])
def test_registered(module, name):
    assert module.FilterModule().filters()[name] is getattr(module, name)


def test_pipeline():
    result = f_eval.conntrack_audit_evaluate({"host": "h1", "facts": FACTS}, warning_pct=70, critical_pct=85, now=10)
    assert result["status"] == "warning"
    report = f_fleet.conntrack_audit_fleet([result], fail_on="warning", warning_pct=70, critical_pct=85, now=20)
    assert report["gate_failed"] is True and report["thresholds"]["warning_pct"] == 70
    assert f_render.conntrack_report_render(report, format="json").startswith("{")
    assert "<svg" in f_render.conntrack_report_render(report, format="html")
    assert f_render.conntrack_report_render(report, format="markdown").startswith("# Conntrack fleet audit")
    assert "h1" in f_render.conntrack_report_render(report, format="text")
    assert "nodeguard_conntrack_audit_status 1" in f_text.conntrack_report_textfile(result)


@pytest.mark.parametrize("call, text", [
    (lambda: f_eval.conntrack_audit_evaluate({"host": "h", "facts": FACTS}, critical_pct=50),
     "conntrack_audit_evaluate: critical_pct:"),
    (lambda: f_eval.conntrack_audit_evaluate({"host": "h", "facts": FACTS}, sizing={"peak_flows": "many"}),
     "conntrack_audit_evaluate: sizing.peak_flows:"),
    (lambda: f_fleet.conntrack_audit_fleet([{"host": "h"}]), "conntrack_audit_fleet: results[0]"),
    (lambda: f_fleet.conntrack_audit_fleet([], fail_on="maybe"), "conntrack_audit_fleet: fail_on"),
    (lambda: f_render.conntrack_report_render({}, format="pdf"), "conntrack_report_render: format must be one of"),
    (lambda: f_render.conntrack_report_render({"hosts": 1}), "conntrack_report_render: input is not a fleet report"),
    (lambda: f_text.conntrack_report_textfile({"x": 1}), "conntrack_report_textfile: input is not a host result"),
])
def test_errors_are_filter_errors(call, text):
    with pytest.raises(AnsibleFilterError) as info:
        call()
    assert text in str(info.value)
