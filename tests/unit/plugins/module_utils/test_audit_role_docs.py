"""The conntrack_audit role's README, argument_specs and defaults list the same variables; choices match the code."""
import os
import re

import yaml

from ansible_collections.nodeguard.conntrack.plugins.module_utils import _audit_eval as ev
from ansible_collections.nodeguard.conntrack.plugins.module_utils._report_render import RENDERERS

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "conntrack_audit")


def _load(*parts):
    with open(os.path.join(ROLE, *parts)) as handle:
        return handle.read()


def test_readme_argument_specs_and_defaults_agree():
    spec = yaml.safe_load(_load("meta", "argument_specs.yml"))["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load(_load("defaults", "main.yml"))
    rows = dict(re.findall(r"^\| `(conntrack_audit_\w+)` \| `?([^|`]*?)`? \|", _load("README.md"), re.M))
    assert set(spec) == set(defaults) == set(rows)
    for name, option in spec.items():
        assert option.get("description"), name
        default = defaults[name]
        if isinstance(default, str) and "{{" in default:
            # templated on the controller: the spec documents what it resolves to
            assert yaml.safe_load(rows[name]) == option["default"], name
            continue
        assert option.get("default") == default, name
        shown = yaml.safe_load(rows[name]) if rows[name] not in ("", "null") else None
        assert shown == default, name


def test_choices_and_defaults_match_the_code():
    spec = yaml.safe_load(_load("meta", "argument_specs.yml"))["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load(_load("defaults", "main.yml"))
    assert defaults["conntrack_audit_counter_rise"] == ev.DEFAULT_COUNTER_RISE
    assert defaults["conntrack_audit_firewall_severity"] == ev.DEFAULT_FIREWALL_SEVERITY
    assert defaults["conntrack_audit_warning_pct"] == ev.DEFAULT_WARNING_PCT
    assert defaults["conntrack_audit_critical_pct"] == ev.DEFAULT_CRITICAL_PCT
    assert set(spec["conntrack_audit_report_formats"]["choices"]) == set(RENDERERS) - {"text"}
    assert spec["conntrack_audit_fail_on"]["choices"] == ["none"] + list(ev.LEVELS[1:])


def test_tasks_use_fqcn_and_private_names():
    for name in os.listdir(os.path.join(ROLE, "tasks")):
        text = _load("tasks", name)
        for module in re.findall(r"^\s+-?\s*([a-z_]+(?:\.[a-z_]+)*):\s*$", text, re.M):
            if module in ("name", "when", "vars", "loop", "tags", "argv", "that", "gather_subset", "filter", "block",
                          "loop_control", "environment", "group_by", "status"):
                continue
            assert module.count(".") == 2, (name, module)
        for var in re.findall(r"\b(__?[a-z]\w*)\b", text):
            if var.startswith("__"):
                assert var.startswith("__conntrack_audit_"), (name, var)
