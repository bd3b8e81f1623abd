"""The conntrack_tuning role's sizing choices match the code (README/spec/defaults: tests/unit/test_role_interfaces.py)."""
import os

import yaml

ROLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "conntrack_tuning")


def _load(*parts):
    with open(os.path.join(ROLE, *parts)) as handle:
        return handle.read()


def test_sizing_choices_match_the_code():
    from ansible_collections.nodeguard.conntrack.plugins.plugin_utils._sizing import PRESETS, TIMEOUT_PROFILES
    spec = yaml.safe_load(_load("meta", "argument_specs.yml"))["argument_specs"]["main"]["options"]
    assert set(spec["conntrack_tuning_timeout_profile"]["choices"]) == set(TIMEOUT_PROFILES)
    assert set(spec["conntrack_tuning_preset"]["choices"]) == set(PRESETS) | {"none"}
