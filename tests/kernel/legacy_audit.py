"""A collections path with the 0.1.0 audit role (tests/kernel/legacy/conntrack_audit) in place of today's.

Everything else (modules, module_utils, filters, playbooks, the other roles) is the current collection, linked,
so only the role's way of collecting and storing differs.
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
        target = LEGACY_ROLE if role == "conntrack_audit" else os.path.join(REPO_ROOT, "roles", role)
        os.symlink(target, os.path.join(root, "roles", role))
    return str(directory)
