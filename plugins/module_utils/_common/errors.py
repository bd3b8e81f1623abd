# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One error root for the whole collection (private).

Every error module_utils and plugin_utils raise on purpose derives from ``NodeguardError``:

* ``NodeguardError(msg, **details)``: ``msg`` is the sentence the user reads, ``details`` are extra result keys
  (``errno``, ``rolled_back``, ``knobs``, ...) a module returns beside ``msg``.
* ``InputError(field, msg)``: an option or input value the collection cannot use; the message starts with the
  dotted path of the field and ``details["field"]`` carries it. Raised before anything on the host changes.
* ``HostError``: the managed node refused or failed (a command, a file, a write the kernel rejected);
  ``KernelError`` is the kernel answering a request with an errno (``details["errno"]``).
* ``ParseError``: text or bytes from the kernel or a tool that are not in the format they should be.

``InputError`` and ``ParseError`` are also ``ValueError`` (as the classes they replace were). Domain classes
(``TuneError``, ``NetlinkError``, ``FirewallError``, ...) remain importable as subclasses of these.

A module catches ``NodeguardError`` once and calls ``fail_json(module, exc)``; a filter plugin raises
``AnsibleFilterError`` from it.
"""

import contextlib


class NodeguardError(Exception):
    """Root of the collection's errors: a message for the user and details returned beside it."""

    def __init__(self, msg, **details):
        super(NodeguardError, self).__init__(msg)
        self.msg = msg
        self.details = details


class InputError(NodeguardError, ValueError):
    """Bad input. ``field`` is the dotted path of the offending option (None when the caller adds it)."""

    def __init__(self, field, msg, **details):
        if field is not None:
            details["field"] = field
        super(InputError, self).__init__(msg if field is None else "%s: %s" % (field, msg), **details)
        self.field = field
        self.reason = msg


class HostError(NodeguardError):
    """The managed node refused or failed: a command, a file, a write the kernel rejected."""


class KernelError(HostError):
    """The kernel answered a request with an error; ``errno`` is positive (or None)."""

    def __init__(self, msg, errno=None, **details):
        details["errno"] = errno
        super(KernelError, self).__init__(msg, **details)
        self.errno = errno


class ParseError(NodeguardError, ValueError):
    """Text or bytes from the kernel or a tool that are not in the expected format."""


@contextlib.contextmanager
def host_io(what="host I/O"):
    """Turn an OSError inside the block into a HostError ``<what> failed: <reason>``."""
    try:
        yield
    except (IOError, OSError) as exc:
        raise HostError("%s failed: %s" % (what, exc))


def fail_json(module, exc, action=None, **extra):
    """Fail ``module`` with the error's message and details (``extra`` adds result keys).

    ``action`` (e.g. ``"read conntrack entries"``) prefixes host, kernel and parse errors as
    ``cannot <action>: <msg>``; input errors already name their field and keep their message.
    """
    msg = exc.msg
    if action and not isinstance(exc, InputError):
        msg = "cannot %s: %s" % (action, msg)
    result = dict(exc.details)
    result.update(extra)
    module.fail_json(msg=msg, **result)
