"""Make ``ansible_collections.nodeguard.conntrack`` importable for unit tests.

``make`` creates ``.build/collections/ansible_collections/nodeguard/conntrack`` as a link to the
repository root; unit tests import the collection through that path, exactly as Ansible does.
"""
import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_COLLECTIONS = os.path.join(_ROOT, ".build", "collections")
_LINK = os.path.join(_COLLECTIONS, "ansible_collections", "nodeguard", "conntrack")
if not os.path.exists(_LINK):
    os.makedirs(os.path.dirname(_LINK), exist_ok=True)
    os.symlink(os.path.relpath(_ROOT, os.path.dirname(_LINK)), _LINK)
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)
# tests/shared_reference.py: where ../shared/reference is
_TESTS = os.path.join(_ROOT, "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
