# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin behind nodeguard.conntrack.conntrack_audit_state (documentation: plugins/modules/)."""

from ansible.plugins.action import ActionBase

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_state


class ActionModule(ActionBase):
    """Reads or writes every host's audit state on the controller; runs no module anywhere."""

    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("path", "read", "write"))
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        _spec, args = self.validate_argument_spec(argument_spec=dict(
            path=dict(type="path", required=True),
            read=dict(type="list", elements="str"),
            write=dict(type="list", elements="raw"),
        ), mutually_exclusive=[("read", "write")], required_one_of=[("read", "write")])
        try:
            if args["read"] is not None:
                previous, unreadable = _audit_state.read_states(args["path"], args["read"])
                for host, reason in sorted(unreadable.items()):
                    self._display.warning("conntrack_audit_state: %s (%s audits as a first run)" % (reason, host))
                result.update(changed=False, previous=previous, unreadable=unreadable)
            else:
                changed = _audit_state.write_states(args["path"], args["write"], check_mode=self._task.check_mode)
                result.update(changed=bool(changed), written=changed)
        except (NodeguardError, IOError, OSError) as exc:
            result.update(failed=True, msg="conntrack_audit_state: %s" % exc)
        return result
