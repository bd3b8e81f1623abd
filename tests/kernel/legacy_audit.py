"""A collections path with the 0.1.0 audit role (tests/kernel/legacy/conntrack_audit) in place of today's.

Everything else (modules, module_utils, filters, playbooks, the other roles, and the role's defaults) is the current
collection, linked, so only the role's way of collecting and storing differs.
"""
import os

from netns_lab import REPO_ROOT

LEGACY_ROLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "legacy", "conntrack_audit")


def legacy_collection(directory: str) -> str:
    """Build ``<directory>/ansible_collections/nodeguard/conntrack`` and return ``directory`` (a collections path)."""
    root = os.path.join(str(directory), "ansible_collections", "nodeguard", "conntrack")
    os.makedirs(os.path.join(root, "roles"))
    for name in os.listdir(REPO_ROOT):
        if name in ("roles", ".git", ".build", ".venv", ".cache", ".lab"):
            continue
        os.symlink(os.path.join(REPO_ROOT, name), os.path.join(root, name))
    for role in os.listdir(os.path.join(REPO_ROOT, "roles")):
        if role != "conntrack_audit":
            os.symlink(os.path.join(REPO_ROOT, "roles", role), os.path.join(root, "roles", role))
    # the 0.1.0 tasks, vars and specs with today's defaults: the comparison is about how hosts are collected and
    # state is kept, not about defaults changed since (such as a counter added to conntrack_audit_counter_rise)
    legacy = os.path.join(root, "roles", "conntrack_audit")
    os.makedirs(legacy)
    for part in os.listdir(LEGACY_ROLE):
        source = os.path.join(REPO_ROOT, "roles", "conntrack_audit", part) if part == "defaults" else \
            os.path.join(LEGACY_ROLE, part)
        os.symlink(source, os.path.join(legacy, part))
    return str(directory)
