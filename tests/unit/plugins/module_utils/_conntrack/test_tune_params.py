"""conntrack_tune option checks (tune.validate_params: the parts the planner does not see): mode, paths, empty knobs."""
import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.tune import DEFAULT_PATHS, TuneError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.tune import validate_params as _validate

BASE = {
    "knobs": {"max": 262144}, "state": "present", "persist": True, "apply_live": True, "raise_only": False,
    "readonly_policy": "skip", "autoload": "auto", "load_module": True, "mode": "0644",
    "sysctl_file": DEFAULT_PATHS["sysctl"], "modules_load_file": DEFAULT_PATHS["modules_load"],
    "udev_rule_file": DEFAULT_PATHS["udev_rule"], "modprobe_file": DEFAULT_PATHS["modprobe"],
}


def test_valid_input():
    desired, policy, paths = _validate(dict(BASE))
    assert desired == {"max": 262144}
    assert policy["mode"] == 0o644
    assert paths["sysctl"] == DEFAULT_PATHS["sysctl"]


@pytest.mark.parametrize("change, field", [
    ({"mode": "rw-r--r--"}, "mode"),
    ({"mode": "0666"}, "mode"),
    ({"mode": "4755"}, "mode"),
    ({"sysctl_file": "etc/sysctl.d/x.conf"}, "sysctl_file"),
    ({"udev_rule_file": "/etc/udev/rules.d/../../passwd"}, "udev_rule_file"),
    ({"modprobe_file": DEFAULT_PATHS["sysctl"]}, "sysctl_file"),
    ({"knobs": {}}, "knobs"),
    ({"knobs": {"kernel.panic": 1}}, "knobs.kernel.panic"),
    ({"readonly_policy": "ignore"}, "readonly_policy"),
])
def test_bad_input_names_the_field(change, field):
    params = dict(BASE)
    params.update(change)
    with pytest.raises(TuneError) as info:
        _validate(params)
    assert info.value.field == field


def test_absent_needs_no_knobs():
    desired, policy, _paths = _validate(dict(BASE, knobs={}, state="absent"))
    assert desired == {} and policy["state"] == "absent"
