"""Where the shared reference material is: ``../shared/reference`` next to the repository (CI always has it).

Searched in order: ``NODEGUARD_SHARED`` (a ``shared`` directory), ``shared`` next to the repository root or next to
one of its two parents, and next to the main checkout when this is a git worktree. Without it a test skips with
the reason; under ``CI=true`` it fails instead. The files are read where they are, never copied into the project.
"""
import os
import subprocess

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _candidates():
    if os.environ.get("NODEGUARD_SHARED"):
        yield os.environ["NODEGUARD_SHARED"]
    parent = os.path.dirname(REPO_ROOT)
    for _level in range(3):
        yield os.path.join(parent, "shared")
        parent = os.path.dirname(parent)
    try:
        common = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--git-common-dir"], capture_output=True,
                                text=True, check=False).stdout.strip()
    except OSError:
        common = ""
    if common:
        main_root = os.path.dirname(os.path.abspath(os.path.join(REPO_ROOT, common)))
        yield os.path.join(os.path.dirname(main_root), "shared")


def find(*parts):
    """The path of ``shared/<parts>`` when it exists, else None."""
    for shared in _candidates():
        path = os.path.join(shared, *parts)
        if os.path.exists(path):
            return path
    return None


def require(*parts):
    """The path of ``shared/<parts>``; skip (fail under CI=true) with the reason when it is missing."""
    path = find(*parts)
    if path is None:
        reason = "shared/%s not found next to the repository (../shared, or NODEGUARD_SHARED)" % "/".join(parts)
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path
