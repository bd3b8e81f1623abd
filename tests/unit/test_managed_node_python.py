"""Modules and module_utils run on managed nodes with Python >= 3.7 (DESIGN.md): their syntax must parse
with the 3.7 grammar, and they may import only the standard library and ansible.module_utils."""
import ast
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODE_DIRS = ("plugins/modules", "plugins/module_utils")
NODE_FILES = sorted(
    os.path.relpath(os.path.join(here, f), ROOT)
    for d in NODE_DIRS for here, _dirs, files in os.walk(os.path.join(ROOT, d)) for f in files if f.endswith(".py")
)


@pytest.mark.parametrize("path", NODE_FILES)
def test_parses_with_python_37_grammar(path):
    with open(os.path.join(ROOT, path)) as handle:
        source = handle.read()
    ast.parse(source, filename=path, feature_version=(3, 7))


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


def test_grammar_check_rejects_newer_syntax():
    # the guard above is real: 3.8's assignment expression does not parse with the 3.7 grammar
    with pytest.raises(SyntaxError):
        ast.parse("if (n := 1):\n    pass\n", feature_version=(3, 7))
