"""Every role's interface: README table, meta/argument_specs.yml and defaults/main.yml list the same variables
with the same defaults; tasks call modules by FQCN and keep private names under the role's own prefix."""
import os
import re

import pytest
import yaml
from ansible.playbook.block import Block
from ansible.playbook.task import Task

ROLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles")
ROLES = sorted(name for name in os.listdir(ROLES_DIR) if os.path.isdir(os.path.join(ROLES_DIR, name)))
KEYWORDS = set(Task.fattributes) | set(Block.fattributes) | {"local_action", "with_items", "with_dict"}


def _load(role, *parts):
    with open(os.path.join(ROLES_DIR, role, *parts)) as handle:
        return handle.read()


def _options(role):
    return yaml.safe_load(_load(role, "meta", "argument_specs.yml"))["argument_specs"]["main"]["options"]


def test_every_role_is_covered():
    assert ROLES == ["conntrack_audit", "conntrack_firewall", "conntrack_tuning"]


@pytest.mark.parametrize("role", ROLES)
def test_readme_argument_specs_and_defaults_agree(role):
    spec = _options(role)
    defaults = yaml.safe_load(_load(role, "defaults", "main.yml"))
    rows = dict(re.findall(r"^\| `(%s_\w+)` \| `?([^|`]*?)`? \|" % role, _load(role, "README.md"), re.M))
    assert set(spec) == set(defaults) == set(rows)
    for name, option in spec.items():
        assert option.get("description"), name
        default = defaults[name]
        if isinstance(default, str) and "{{" in default:
            # templated on the controller: the spec and the README document what it resolves to
            assert yaml.safe_load(rows[name]) == option["default"], name
            continue
        assert option.get("default") == default, name
        shown = yaml.safe_load(rows[name]) if rows[name] not in ("", "null") else None
        assert shown == default, name


def _actions(tasks):
    for task in tasks or []:
        if "block" in task:
            for part in ("block", "rescue", "always"):
                yield from _actions(task.get(part))
            continue
        actions = [key for key in task if key not in KEYWORDS]
        assert len(actions) == 1, task
        yield actions[0]


@pytest.mark.parametrize("role", ROLES)
def test_tasks_use_fqcn_and_private_names(role):
    for name in os.listdir(os.path.join(ROLES_DIR, role, "tasks")):
        text = _load(role, "tasks", name)
        for action in _actions(yaml.safe_load(text)):
            assert action.count(".") == 2, (name, action)
        for var in re.findall(r"\b(__[a-z]\w*)\b", text):
            assert var.startswith("__%s_" % role), (name, var)
        for var in re.findall(r"^\s+register:\s*(\w+)", text, re.M):
            assert var.startswith((role + "_", "__" + role + "_")), (name, var)
