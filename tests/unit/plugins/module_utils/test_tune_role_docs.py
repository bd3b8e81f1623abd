"""The conntrack_tuning role's README, argument_specs and defaults list the same variables and defaults."""
import os
import re

import yaml

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "roles", "conntrack_tuning")


def _load(*parts):
    with open(os.path.join(ROLE, *parts)) as handle:
        return handle.read()


def test_readme_argument_specs_and_defaults_agree():
    spec = yaml.safe_load(_load("meta", "argument_specs.yml"))["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load(_load("defaults", "main.yml"))
    rows = dict(re.findall(r"^\| `(conntrack_tuning_\w+)` \| `?([^|`]*?)`? \|", _load("README.md"), re.M))
    assert set(spec) == set(defaults) == set(rows)
    for name, option in spec.items():
        assert option.get("default") == defaults[name], name
        shown = yaml.safe_load(rows[name]) if rows[name] not in ("", "null") else None
        assert shown == defaults[name], name
        assert option.get("description"), name


def test_sizing_choices_match_the_code():
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._sizing import PRESETS, TIMEOUT_PROFILES
    spec = yaml.safe_load(_load("meta", "argument_specs.yml"))["argument_specs"]["main"]["options"]
    assert set(spec["conntrack_tuning_timeout_profile"]["choices"]) == set(TIMEOUT_PROFILES)
    assert set(spec["conntrack_tuning_preset"]["choices"]) == set(PRESETS) | {"none"}
