# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Apply the baseline as the nftables table the collection owns (private; the work of nftables_baseline).

``run(host, params, check_mode)`` validates the model before anything is read, reads the live rule set, and when the
owned table differs replaces it in one ``nft -f`` transaction that names no other table. A rollback timer (the
iptables baseline's, see ``apply.Host.start_timer``) reloads the previous owned table unless confirmed. Persistence
is a file that declares, deletes and defines only the owned table, loaded by a unit of its own: /etc/nftables.conf
is never written and no other table is ever captured.
"""

import binascii
import os
import shlex

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import HostError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.host_files import read_or_none, \
    unit_enable_links, write_file_atomic
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import apply as fw_apply
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import model as fw_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_audit
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_inventory
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_render
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_ruleset

OTHER_HOOKS = ("prerouting", "input", "forward")


class NftHost(fw_apply.Host):
    """nft on the managed node (or in the network namespace the module runs in)."""

    def nft(self):
        path = self.which("nft")
        if not path:
            raise HostError("the nft command is required (package nftables)")
        return path

    def ruleset(self):
        rc, out, err = self.run([self.nft(), "-j", "list", "ruleset"])
        if rc != 0:
            raise HostError("nft -j list ruleset failed (rc=%d): %s" % (rc, err.strip()))
        return nft_ruleset.parse(out)

    def listing(self, family):
        rc, out, err = self.run([self.nft(), "list", "table", family, nft_render.TABLE])
        if rc != 0:
            raise HostError("nft list table %s %s failed (rc=%d): %s" % (family, nft_render.TABLE, rc, err.strip()))
        return out

    def load(self, script):
        rc, _out, err = self.run([self.nft(), "-f", "-"], data=script)
        if rc != 0:
            raise HostError("nft -f refused the transaction (nothing was changed, nft applies all or nothing): %s"
                            % err.strip())


def owned_present(ruleset):
    return sorted(t["family"] for t in ruleset["tables"]
                  if t["name"] == nft_render.TABLE and t["family"] in nft_render.OWNED_FAMILIES)


def live_chain_heads(ruleset, family):
    return dict((name, (chain.get("type"), chain["hook"], chain.get("prio"), chain.get("policy", "accept"))
                 if chain.get("hook") else None)
                for (fam, table, name), chain in ruleset["chains"].items()
                if fam == family and table == nft_render.TABLE)


def live_rule_counts(ruleset, family):
    return dict((name, len(chain["rules"])) for (fam, table, name), chain in ruleset["chains"].items()
                if fam == family and table == nft_render.TABLE)


def cannot_override(ruleset):
    """Other tables' base chains on the hooks our accepts are on, which drop on their own: what an accept in our
    table cannot get a packet past (every base chain on a hook gets a say; a drop anywhere is final)."""
    out = []
    bases = [c for c in nft_ruleset.base_chains(ruleset)
             if c["table"] != nft_render.TABLE and c["family"] in nft_ruleset.FAMILY_NFPROTO
             and c["hook"] in OTHER_HOOKS and c.get("type", "filter") == "filter"]
    for chain in bases:
        walked = nft_ruleset.walk(ruleset, chain)
        drops_by_default = any(nft_audit._Chain(ruleset, chain, nfproto, walked).drops  # pylint: disable=protected-access
                               for nfproto in nft_ruleset.FAMILY_NFPROTO[chain["family"]])
        drop_rules = sum(1 for entry in walked if entry["info"]["verdict"] in ("drop", "reject"))
        if not drops_by_default and not drop_rules:
            continue
        out.append({"family": chain["family"], "table": chain["table"], "chain": chain["name"], "hook": chain["hook"],
                    "priority": nft_ruleset.priority(chain), "policy": chain.get("policy", "accept"),
                    "drops_by_default": drops_by_default, "drop_rules": drop_rules})
    return out


def _files(params, model):
    files = {}
    if params.get("rules_path"):
        files[params["rules_path"]] = (nft_render.replace_script(model, params["priority"],
                                                                 present=nft_render.OWNED_FAMILIES), 0o600)
    if params.get("unit_path") and params.get("rules_path"):
        files[params["unit_path"]] = (nft_render.render_unit(params["nft_path"], params["rules_path"]), 0o644)
    return files


def _persisted(params):
    paths = [params.get("rules_path"), params.get("unit_path")]
    if params.get("unit_path"):
        paths.extend(unit_enable_links(params["unit_path"]))
    return [path for path in paths if path and os.path.lexists(path)]


def _start_rollback(host, params, present, listings):
    token = binascii.hexlify(os.urandom(8)).decode("ascii")
    folder = os.path.join(params["state_dir"], "rollback-" + token)
    os.makedirs(folder, 0o700)
    restore = os.path.join(folder, "restore.nft")
    # whatever owned table exists when the timer fires is deleted, the previous ones come back
    write_file_atomic(restore, nft_render.restore_script(nft_render.OWNED_FAMILIES, listings), 0o600)
    done = os.path.join(folder, "done")
    fire = "if mkdir %s 2>/dev/null; then %s -f %s; echo $? > %s; fi" % (
        shlex.quote(done), shlex.quote(host.nft()), shlex.quote(restore), shlex.quote(os.path.join(folder, "rc")))
    method = host.start_timer(folder, token, fire, params["rollback_timeout"], params["rollback_method"])
    del present
    return token, method


def run(host, params, check_mode):
    """The module's result dict; raises NodeguardError (InputError before anything is read)."""
    model = fw_model.normalise_model(params)
    if not isinstance(params.get("priority"), int) or not -400 < params["priority"] < 400:
        raise fw_model.FirewallModelError("priority", "must be an integer between -399 and 399, got %r"
                                          % (params.get("priority"),))
    result = {"changed": False, "table": "%s %s" % (nft_render.table_family(model), nft_render.TABLE),
              "digest": nft_render.digest(model, params["priority"]), "rollback_token": None,
              "rollback_method": None, "files_changed": [], "persist_pending": False, "cannot_override": [],
              "warnings": []}
    if params.get("confirm"):
        result["confirmed"] = host.confirm(params["state_dir"], params.get("rollback_token"), check_mode)
        result["changed"] = bool(result["confirmed"])
        if params["state"] == "present" and params.get("persist"):
            _persist(host, params, model, result, check_mode)
        return result

    ruleset = host.ruleset()
    present = owned_present(ruleset)
    listings = [host.listing(family) for family in present]
    before = "".join(listings)
    if params["state"] == "absent":
        result["table"] = None
        if present:
            result["changed"] = True
            if not check_mode:
                host.load(nft_render.remove_script(present))
        files = _persisted(params)
        if files:
            result["changed"] = True
            result["files_changed"] = files
            if not check_mode:
                host.remove_files(files)
        result["diff"] = {"before": before, "after": ""}
        return result

    family = nft_render.table_family(model)
    want = nft_render.table_text(model, params["priority"])
    up_to_date = (present == [family] and nft_render.live_digest(listings[0]) == result["digest"]
                  and live_rule_counts(ruleset, family) == nft_render.rule_counts(model, params["priority"])
                  and live_chain_heads(ruleset, family) == nft_render.chain_heads(model, params["priority"]))
    result["diff"] = {"before": before, "after": want}
    if not up_to_date:
        result["changed"] = True
        if not check_mode:
            if params["rollback_timeout"] > 0:
                result["rollback_token"], result["rollback_method"] = _start_rollback(host, params, present, listings)
            host.load(nft_render.replace_script(model, params["priority"], present))
            ruleset = host.ruleset()
    result["cannot_override"] = cannot_override(ruleset)
    for item in result["cannot_override"]:
        if item["drops_by_default"]:
            result["warnings"].append(
                "%s %s chain %s (%s hook, priority %d) drops what it does not accept itself: an accept in %s cannot "
                "get a packet past it; open the same services there (its owner: %s)" % (
                    item["family"], item["table"], item["chain"], item["hook"], item["priority"], result["table"],
                    nft_inventory.owner({"family": item["family"], "name": item["table"]}, [])[0]))
    if params.get("persist"):
        if result["rollback_token"]:
            result["persist_pending"] = True  # written by the confirmation, never before
        else:
            _persist(host, params, model, result, check_mode)
    return result


def _persist(host, params, model, result, check_mode):
    files = _files(params, model)
    changed = [path for path, (content, mode) in sorted(files.items())
               if read_or_none(path) != content or (os.stat(path).st_mode & 0o7777) != mode]
    if changed:
        result["changed"] = True
        result["files_changed"] = sorted(set(result["files_changed"]) | set(changed))
        if not check_mode:
            for path in changed:
                folder = os.path.dirname(path)
                if not os.path.isdir(folder):
                    os.makedirs(folder, 0o755)
            host.write_files(files, changed)
