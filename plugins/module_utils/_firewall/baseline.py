# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""iptables_baseline's orchestration: the model in, the host layer (``apply.Host``) asked, the result out.

Private to the collection. The decisions are the pure ``model``/``render``/``guard`` code's; the host I/O is
``apply``'s. ``run()`` is the one call the module makes.
"""

from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import apply as fw_apply
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import guard as fw_guard
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import model as fw_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import render as fw_render
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import save_parser as fw_save


def _diff_text(states, families):
    return "".join("# %s\n%s" % (family, fw_render.state_text(states[family])) for family in families)


def _lockout_guard(model, live, current, desired, endpoint):
    """Refuse, before anything changes, rules under which the SSH session the module runs in would be cut."""
    family = "ipv6" if ":" in endpoint[0] else "ipv4"
    if family not in model["families"]:
        return
    problem = fw_guard.check(live[family], current[family], desired[family], endpoint)
    if problem:
        chain, what = problem
        field = "policies.output" if chain == "OUTPUT" else "input"
        raise fw_model.FirewallModelError(
            field, "lockout guard: with these rules %s of this SSH connection (%s port %d -> %s port %d); allow it, "
                   "or set lockout_guard=false and use rollback_timeout" % ((what,) + tuple(endpoint)))


def run(module, environ):
    """iptables_baseline's one call: plan, guard, confirm, roll back, apply and persist; returns the module result.

    ``environ`` is the module's environment (the SSH connection for the lockout guard). Raises NodeguardError
    (an InputError for a bad model, FirewallError for the host).
    """
    params = module.params
    result = dict(changed=False, changed_families=[], rollback_token=None, rollback_method=None,
                  rollback_cancelled=[], files_changed=[], persist_pending=False)
    model = fw_model.normalise_model(params)
    present = params["state"] == "present"
    if params["rollback_timeout"] < 0:
        raise fw_model.FirewallModelError("rollback_timeout", "must be 0 (off) or a number of seconds")
    host = fw_apply.Host(module)
    endpoint = host.ssh_connection(environ) if params["lockout_guard"] else None
    resolved = host.resolve(params["backend"], model["families"])
    result["backend"] = resolved["backend"]
    for warning in host.other_backend_warnings(resolved):
        module.warn(warning)

    policy_chains = fw_render.managed_policy_chains(model)
    live = dict((family, host.live(resolved, family)) for family in model["families"])
    current = dict((family, fw_save.owned_state(live[family], model["prefix"], policy_chains))
                   for family in model["families"])
    if present:
        desired = fw_render.render_families(model)
        result["rules"] = dict((family, fw_render.render_restore(desired[family])) for family in model["families"])
    else:
        desired = dict((family, fw_render.absent_state(model, current[family])) for family in model["families"])
    if endpoint:
        _lockout_guard(model, live, current, desired, endpoint)

    if params["confirm"]:
        result["rollback_cancelled"] = host.confirm(params["state_dir"], params["rollback_token"], module.check_mode)
        result["changed"] = bool(result["rollback_cancelled"])
    result["changed_families"] = [family for family in model["families"]
                                  if not fw_render.states_equal(current[family], desired[family])]

    files, to_write, to_remove = {}, [], []
    if present and params["persist"]:
        files = host.planned_files(params, resolved, model, desired)
        to_write = host.files_to_change(files)
    elif not present:
        to_remove = host.persisted_paths(params)

    use_rollback = (present and params["rollback_timeout"] > 0 and result["changed_families"]
                    and not params["confirm"])
    if use_rollback and to_write:
        # persistence waits for the confirmation, so an unconfirmed rule set never comes back at boot
        result["persist_pending"] = True
        to_write = []
    result["files_changed"] = to_write + to_remove
    result["changed"] = result["changed"] or bool(result["changed_families"] or result["files_changed"]
                                                  or result["persist_pending"])
    if module._diff:
        result["diff"] = dict(before=_diff_text(current, model["families"]),
                              after=_diff_text(desired, model["families"]))
    if module.check_mode:
        return result

    before_live = None
    if use_rollback:
        def before_live():
            # started only once every family passed --test, right before the new rules go live
            result["rollback_token"], result["rollback_method"] = host.start_rollback(
                resolved, model["prefix"], dict((f, current[f]) for f in model["families"]),
                params["rollback_timeout"], params["state_dir"], params["rollback_method"],
                expect_policies=dict((f, desired[f]) for f in model["families"]))
            return result["rollback_token"]
    if result["changed_families"]:
        host.apply(resolved, model["prefix"], policy_chains, current, desired, before_live=before_live,
                   state_dir=params["state_dir"])
    host.write_files(files, to_write)
    host.remove_files(to_remove)
    return result
