"""One error root: every exception class of module_utils/plugin_utils derives from NodeguardError."""
import ast
import importlib
import os

import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common import errors as E

_PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "..", "..", "plugins")


def _exception_classes():
    """(module name, class name) of every class named *Error / ReadOnlyKnob defined under plugins/."""
    found = []
    for folder in ("module_utils", "plugin_utils"):
        for root, _dirs, files in os.walk(os.path.join(_PLUGINS, folder)):
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                path = os.path.join(root, name)
                rel = os.path.relpath(path, os.path.join(_PLUGINS, ".."))[:-3].replace(os.sep, ".")
                tree = ast.parse(open(path).read())
                for node in tree.body:
                    if isinstance(node, ast.ClassDef) and (node.name.endswith("Error") or node.name == "ReadOnlyKnob"):
                        found.append(("ansible_collections.nodeguard.conntrack." + rel, node.name))
    return found


def test_the_scan_finds_the_domain_classes():
    names = set(name for _mod, name in _exception_classes())
    assert {"TuneError", "NetlinkError", "FirewallError", "SizingError", "CtFilterError", "ReadOnlyKnob",
            "ProcfsParseError", "RenderError", "NodeguardError"} <= names


@pytest.mark.parametrize("module_name,class_name", _exception_classes())
def test_every_error_class_has_the_one_root(module_name, class_name):
    cls = getattr(importlib.import_module(module_name), class_name)
    assert issubclass(cls, E.NodeguardError), "%s.%s" % (module_name, class_name)


def test_input_error_names_the_field_in_message_and_details():
    exc = E.InputError("knobs.max", "must be an integer")
    assert str(exc) == exc.msg == "knobs.max: must be an integer"
    assert exc.field == "knobs.max" and exc.reason == "must be an integer"
    assert exc.details == {"field": "knobs.max"}
    assert isinstance(exc, ValueError)


def test_input_error_without_field_keeps_the_message():
    exc = E.InputError(None, "unknown knob")
    assert exc.msg == "unknown knob" and exc.details == {}


def test_kernel_error_carries_errno():
    exc = E.KernelError("refused", errno=1)
    assert exc.details == {"errno": 1} and isinstance(exc, E.HostError)


def test_subclasses_keep_their_constructors():
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import entries, netlink
    from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.tune import TuneError
    err = netlink.error_for(1, "CT_GET")
    assert isinstance(err, netlink.CtnetlinkPermissionError) and isinstance(err, E.KernelError)
    assert err.errno == 1 and err.details["errno"] == 1 and "CAP_NET_ADMIN" in err.msg
    parse = netlink.NetlinkParseError("short", "CT_GET")
    assert isinstance(parse, E.ParseError) and isinstance(parse, netlink.NetlinkError)
    assert isinstance(entries.CtFilterError("proto", "bad"), entries.CtError)
    assert entries.CtKernelError(2).details == {"errno": 2}
    tune = TuneError("mode", "bad")
    assert tune.details == {"field": "mode"} and str(tune) == "mode: bad"


class _Module(object):
    def fail_json(self, **kwargs):
        self.failed = kwargs
        raise SystemExit(1)


def test_fail_json_returns_message_and_details():
    module = _Module()
    with pytest.raises(SystemExit):
        E.fail_json(module, E.HostError("it broke", rolled_back=True), action="apply the rules")
    assert module.failed == {"msg": "cannot apply the rules: it broke", "rolled_back": True}
    with pytest.raises(SystemExit):
        E.fail_json(module, E.InputError("sample", "too big"), action="flush conntrack entries")
    assert module.failed == {"msg": "sample: too big", "field": "sample"}


def test_host_io_turns_oserror_into_host_error():
    with pytest.raises(E.HostError) as info:
        with E.host_io("writing the rules"):
            open("/nonexistent-dir/x", "w")
    assert info.value.msg.startswith("writing the rules failed: ")
