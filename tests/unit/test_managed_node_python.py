"""Modules and module_utils run on managed nodes with Python >= 3.8 (ansible-core 2.19, the oldest this collection
supports, runs modules on 3.8 and newer; 2.20 and later need 3.9): their syntax must parse with the 3.8 grammar,
they may import only the standard library and ansible.module_utils, and each of them must import under a real
interpreter of the oldest Python the ansible-core in use accepts on targets, where one exists on this machine
(which also catches what the grammar does not: a ``list[int]`` evaluated at import time, a newer stdlib name)."""
import ast
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_DIRS = ("plugins/modules", "plugins/module_utils")
NODE_FILES = sorted(
    os.path.relpath(os.path.join(here, f), ROOT)
    for d in NODE_DIRS for here, _dirs, files in os.walk(os.path.join(ROOT, d)) for f in files if f.endswith(".py")
)
OLDEST = (3, 8)


@pytest.mark.parametrize("path", NODE_FILES)
def test_parses_with_python_38_grammar(path):
    with open(os.path.join(ROOT, path)) as handle:
        source = handle.read()
    ast.parse(source, filename=path, feature_version=OLDEST)


@pytest.mark.parametrize("path", NODE_FILES)
def test_imports_only_stdlib_and_ansible(path):
    with open(os.path.join(ROOT, path)) as handle:
        tree = ast.parse(handle.read(), filename=path)
    allowed_prefixes = ("ansible.module_utils", "ansible_collections.nodeguard.conntrack.plugins.module_utils")
    stdlib = set(sys.stdlib_module_names)
    bad = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.startswith(allowed_prefixes) or name.split(".")[0] in stdlib or name == "__future__":
                continue
            bad.append(name)
    assert not bad, "%s imports non-stdlib modules: %s" % (path, bad)


@pytest.mark.parametrize("source", [
    "def f(a, /):\n    pass\n",          # 3.8: positional-only parameters
    "if (n := 1):\n    pass\n",          # 3.8: assignment expressions
])
def test_grammar_check_accepts_38_syntax(source):
    ast.parse(source, feature_version=OLDEST)


@pytest.mark.parametrize("source", [
    "match x:\n    case 1:\n        pass\n",                 # 3.10
    "try:\n    pass\nexcept* ValueError:\n    pass\n",      # 3.11
])
def test_grammar_check_rejects_newer_syntax(source):
    # the guard above is real: syntax newer than 3.8 does not parse with the 3.8 grammar
    with pytest.raises(SyntaxError):
        ast.parse(source, feature_version=OLDEST)


def _ansible_target_minimum():
    """The oldest target Python of the ansible-core in use (its module_utils refuse older ones)."""
    from ansible.module_utils import basic
    return max(OLDEST, tuple(basic._PY_MIN))


def _python(version):
    v = "%d.%d" % version
    candidates = [shutil.which("python" + v)] + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python%s" % (v, v))))
    for exe in candidates:
        if exe and subprocess.run([exe, "-c", "import sys; assert sys.version_info[:2] == %r" % (version,)],
                                  capture_output=True, check=False).returncode == 0:
            return exe
    return None


def _module_name(path):
    return "ansible_collections.nodeguard.conntrack." + path[:-3].replace(os.sep, ".").replace(".__init__", "")


def test_every_node_file_imports_under_the_oldest_target_python():
    version = _ansible_target_minimum()
    exe = _python(version)
    if exe is None:
        pytest.skip("NO Python %d.%d interpreter on this machine (python%d.%d on PATH or ~/.pyenv/versions): only the "
                    "3.8 grammar was checked, not an import under the oldest target Python" % (version * 2))
    import ansible
    with tempfile.TemporaryDirectory() as top:
        # a path holding only ansible (its module_utils run on targets) and this collection
        os.symlink(os.path.dirname(ansible.__file__), os.path.join(top, "ansible"))
        os.makedirs(os.path.join(top, "ansible_collections", "nodeguard"))
        os.symlink(ROOT, os.path.join(top, "ansible_collections", "nodeguard", "conntrack"))
        names = [_module_name(p) for p in NODE_FILES]
        script = (
            "import importlib, sys, traceback\n"
            "bad = []\n"
            "for name in sys.argv[1:]:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except Exception:\n"
            "        bad.append(name + ': ' + traceback.format_exc(limit=1).strip().splitlines()[-1])\n"
            "print('\\n'.join(bad))\n"
            "sys.exit(1 if bad else 0)\n"
        )
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": top, "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8"}
        proc = subprocess.run([exe, "-s", "-c", script] + names, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, "under %s:\n%s%s" % (exe, proc.stdout, proc.stderr)


def test_import_check_catches_a_runtime_error_of_an_old_python(tmp_path):
    # the import check above is real: a builtin generic evaluated at import time fails under 3.8
    exe = _python(OLDEST)
    if exe is None:
        pytest.skip("NO Python 3.8 interpreter on this machine")
    (tmp_path / "newer.py").write_text("X: dict = {}\ndef f(a: list[int]) -> None:\n    pass\n")
    proc = subprocess.run([exe, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1]); import newer", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "TypeError" in proc.stderr
