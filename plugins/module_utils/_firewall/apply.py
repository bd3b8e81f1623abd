# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host adapter of the firewall baseline: backend detection, iptables-save/restore, rollback timer, persistence.

Private to the collection. This is the only firewall file that touches the host. It uses a narrow slice of the
module object: ``run_command``, ``get_bin_path`` and ``check_mode``; all decisions are made by the pure
``_fw_model`` / ``_fw_render`` / ``_fw_save`` / ``_fw_loader`` code.
"""

import binascii
import os
import shlex
import shutil
import sys
import tempfile
import time
from typing import Dict, Optional, TypedDict

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import HostError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import procfs
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import proc_net
from ansible_collections.nodeguard.conntrack.plugins.module_utils._host import environment
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import loader
from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.host_files import read_or_none, unit_enable_links, write_file_atomic
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import guard
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import render
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import save_parser as save

TOOLS = {"ipv4": "iptables", "ipv6": "ip6tables"}
C_ENV = {"LANG": "C", "LC_ALL": "C"}
ROUTE_PATHS = ("/proc/net/route", "/proc/net/ipv6_route")


class FirewallError(HostError):
    """A failure the module reports with fail_json; ``details`` go into the result."""


class _ApplyFailed(Exception):
    """(family, reason, script) of a live apply that failed; turned into a FirewallError after recovery."""


class Tools(TypedDict):
    """The restore and save binaries of one family and backend."""

    restore: str
    save: str


class ResolvedBackend(TypedDict):
    """``Host.resolve()``: the backend chosen, its tools per family and the other backend's (None if absent)."""

    backend: str  # nft | legacy
    other: str
    tools: Dict[str, Tools]
    other_tools: Dict[str, Optional[Tools]]


class Host(object):
    """iptables on the managed node (or inside whatever network namespace the module runs in)."""

    def __init__(self, module):
        self.module = module

    # -- commands ---------------------------------------------------------------------------------------------
    def run(self, argv, data=None):
        rc, out, err = self.module.run_command(argv, data=data, binary_data=False, environ_update=C_ENV,
                                               check_rc=False)
        return rc, out, err

    def which(self, name):
        # PATH first, then /sbin, /usr/sbin, /usr/local/sbin (Debian and RHEL-family layouts both covered)
        return self.module.get_bin_path(name, required=False)

    def _version_backend(self, binary):
        rc, out, err = self.run([binary, "-V"])
        if rc != 0:
            return None
        # same reading of ``iptables -V`` as conntrack_facts; an unmarked version line is the legacy backend
        return environment.detect_iptables_backend(None, out + err) or "legacy"

    def resolve(self, requested, families) -> ResolvedBackend:
        """{'backend': name, 'other': name, 'tools': {family: {'save', 'restore'}}, 'other_tools': {...}}."""
        backend = requested
        if requested == "auto":
            plain = self.which("iptables")
            backend = self._version_backend(plain) if plain else None
            if backend is None:
                backend = "nft" if self.which("iptables-nft-restore") else "legacy"
        other = "legacy" if backend == "nft" else "nft"
        tools, other_tools = {}, {}
        for family in families:
            tools[family] = self._tools(family, backend)
            if tools[family] is None:
                raise FirewallError("no %s-%s-restore/save (or a plain %s-restore using the %s backend) found on "
                                    "this host" % (TOOLS[family], backend, TOOLS[family], backend))
            other_tools[family] = self._tools(family, other, plain_fallback=False)
        return {"backend": backend, "other": other, "tools": tools, "other_tools": other_tools}

    def _tools(self, family, backend, plain_fallback=True):
        tool = TOOLS[family]
        restore, saver = self.which("%s-%s-restore" % (tool, backend)), self.which("%s-%s-save" % (tool, backend))
        if restore and saver:
            return {"restore": restore, "save": saver}
        if plain_fallback:
            plain = self.which(tool)
            restore, saver = self.which(tool + "-restore"), self.which(tool + "-save")
            if plain and restore and saver and self._version_backend(plain) == backend:
                return {"restore": restore, "save": saver}
        return None

    def save(self, tools):
        rc, out, err = self.run([tools["save"]])
        if rc != 0:
            raise FirewallError("%s failed (rc=%d): %s" % (tools["save"], rc, err.strip()))
        try:
            return save.parse_save(out)
        except save.SaveParseError as exc:
            raise FirewallError("cannot parse %s output: %s" % (tools["save"], exc))

    def restore(self, tools, script, test=False):
        # the script goes in a private temp file, not stdin: a restore binary that exits early must not turn
        # into a broken pipe that hides its own error message
        handle, path = tempfile.mkstemp(prefix="ngct-restore-", suffix=".rules")
        try:
            with os.fdopen(handle, "w") as stream:
                stream.write(script)
            argv = [tools["restore"], "--noflush"] + (["--test"] if test else []) + [path]
            rc, out, err = self.run(argv)
        finally:
            os.unlink(path)
        return rc, (err or out).strip()

    # -- apply with recovery ------------------------------------------------------------------------------------
    def apply(self, resolved, prefix, policy_chains, current, desired, before_live=None, state_dir=None):
        """Turn ``current`` into ``desired`` for every family, all or nothing.

        Each family's script is validated with ``--test`` first. Then ``before_live`` (the rollback timer's start)
        is called, right before the first rule goes live; it returns the timer's token. If any later step fails,
        every family already touched is put back to its previous owned state (re-read, then a new transaction back to
        ``current``); a rollback timer is then cancelled when the previous rules are back, and left running (it is
        the only way back) when they are not. Either way the failure names the token and what happened to it.
        """
        families = [f for f in desired if not render.states_equal(current[f], desired[f])]
        for family in families:
            script = render.render_apply(current[family], desired[family])
            rc, err = self.restore(resolved["tools"][family], script, test=True)
            if rc != 0:
                raise FirewallError("%s rules rejected by %s --test (nothing changed): %s"
                                    % (family, resolved["tools"][family]["restore"], err), script=script)
        token = before_live() if before_live else None
        touched = []
        try:
            for family in families:
                touched.append(family)
                script = render.render_apply(current[family], desired[family])
                rc, err = self.restore(resolved["tools"][family], script)
                live = self.owned(resolved, family, prefix, policy_chains) if rc == 0 else None
                if rc != 0 or not render.states_equal(live, desired[family]):
                    reason = err if rc != 0 else "the live rules read back differ from the rules applied"
                    raise _ApplyFailed(family, reason, script)
        except (_ApplyFailed, HostError, IOError, OSError) as exc:
            if isinstance(exc, _ApplyFailed):
                family, reason, script = exc.args
            else:
                family, reason, script = touched[-1], str(exc), None
            restored = self.recover(resolved, prefix, policy_chains, current, touched)
            details = dict(script=script, restored=restored)
            timer = ""
            if token:
                details["rollback_token"] = token
                details["rollback_cancelled"] = []
                if restored:
                    try:
                        details["rollback_cancelled"] = self.confirm(state_dir, token, False)
                        timer = "; rollback timer %s cancelled" % token
                    except FirewallError as late:
                        timer = "; rollback timer %s: %s" % (token, late)
                else:
                    timer = "; rollback timer %s left running to restore them" % token
            raise FirewallError("applying the %s rules failed: %s; previous rules %s%s"
                                % (family, reason, "restored" if restored else "COULD NOT BE RESTORED", timer),
                                **details)

    def owned(self, resolved, family, prefix, policy_chains):
        return save.owned_state(self.save(resolved["tools"][family]), prefix, policy_chains)

    def live(self, resolved, family):
        """The whole parsed rule set of one family (the lockout guard follows foreign rules too)."""
        return self.save(resolved["tools"][family])

    def ssh_connection(self, environ):
        """(client, client port, server, server port) of the SSH session this module runs under, looked up through
        the parent processes when sudo/su removed SSH_CONNECTION from the environment; None when there is none."""

        def read_environ(pid):
            try:
                with open("/proc/%d/environ" % pid, "rb") as handle:
                    return handle.read()
            except (IOError, OSError):
                return None

        def read_ppid(pid):
            stat = read_or_none("/proc/%d/stat" % pid)
            if not stat or ")" not in stat:
                return None
            fields = stat.rsplit(")", 1)[1].split()
            return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None

        return guard.find_ssh_connection(environ, read_environ, read_ppid, os.getpid())

    def recover(self, resolved, prefix, policy_chains, previous, families):
        ok = True
        for family in families:
            try:
                now = self.owned(resolved, family, prefix, policy_chains)
                if not render.states_equal(now, previous[family]):
                    self.restore(resolved["tools"][family], render.render_apply(now, previous[family]))
                    now = self.owned(resolved, family, prefix, policy_chains)
                ok = ok and render.states_equal(now, previous[family])
            except FirewallError:
                ok = False
        return ok

    def other_backend_warnings(self, resolved):
        warnings = []
        for family, tools in sorted(resolved["other_tools"].items()):
            if not tools:
                continue
            rc, out, _err = self.run([tools["save"]])
            if rc != 0:
                continue
            try:
                other = save.parse_save(out)
            except save.SaveParseError:
                continue
            if save.has_rules(other):
                warnings.append("the %s backend also holds %s rules (%s); packets traverse both, and tools that read "
                                "only one backend show half the picture -- see docs/firewall.md"
                                % (resolved["other"], family, tools["save"]))
        return warnings

    # -- audit: read what is there --------------------------------------------------------------------------------
    def read_rulesets(self, families, backends):
        """Every (family, backend) rule set this host can save: ``(rulesets, sources, skipped)``.

        ``rulesets`` are ``{"family", "backend", "ruleset"}``; a missing or failing ``*-save`` tool is skipped with
        the reason, output that does not parse is an error.
        """
        rulesets, sources, skipped = [], [], []
        for family in families:
            for backend in backends:
                name = "%s-%s-save" % (TOOLS[family], backend)
                path = self.which(name)
                if not path:
                    skipped.append("%s/%s: %s not found" % (family, backend, name))
                    continue
                rc, out, err = self.run([path])
                if rc != 0:
                    skipped.append("%s/%s: %s failed (rc=%d): %s" % (family, backend, name, rc, err.strip()))
                    continue
                try:
                    ruleset = save.parse_save(out)
                except save.SaveParseError as exc:
                    raise FirewallError("cannot parse %s output: %s" % (name, exc))
                sources.append(path)
                rulesets.append({"family": family, "backend": backend, "ruleset": ruleset})
        return rulesets, sources, skipped

    def audit_context(self, multi_homed=None, tcp_be_liberal=None):
        """What the audit needs to know about the host; a value given by the caller wins over the host's."""
        context = {}
        if multi_homed is None:
            interfaces = proc_net.route_interfaces(*(read_or_none(path) for path in ROUTE_PATHS))
            context["multi_homed"] = len(interfaces) > 1
            context["route_interfaces"] = interfaces
        else:
            context["multi_homed"] = multi_homed
        if tcp_be_liberal is None:
            context["tcp_be_liberal"] = procfs.read_knobs(["tcp_be_liberal"]).get("tcp_be_liberal", 0) == 1
        else:
            context["tcp_be_liberal"] = tcp_be_liberal
        # a DNAT to one of these is local delivery (INPUT), not forwarding (NGCT004)
        context["local_addresses"] = proc_net.local_addresses(read_or_none("/proc/net/fib_trie"),
                                                              read_or_none("/proc/net/if_inet6"))
        return context

    # -- rollback timer -------------------------------------------------------------------------------------------
    def _systemd_pid1(self):
        return os.path.isdir("/run/systemd/system") and read_or_none("/proc/1/comm") in ("systemd\n", "systemd")

    def start_rollback(self, resolved, prefix, previous, timeout, state_dir, method, expect_policies=None):
        """Save the previous owned state and start a detached timer that restores it unless confirmed.

        ``expect_policies`` ({family: desired state}) are the policies the new rules set: the timer puts a policy
        back only while it still has that value, never over a change another tool made meanwhile. If the timer
        cannot be started, its folder is removed and nothing else has changed.
        """
        token = binascii.hexlify(os.urandom(8)).decode("ascii")
        folder = os.path.join(state_dir, "rollback-" + token)
        os.makedirs(folder, 0o700)
        try:
            return self._start_rollback(resolved, prefix, previous, timeout, folder, token, method,
                                        expect_policies or {})
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _start_rollback(self, resolved, prefix, previous, timeout, folder, token, method, expect_policies):
        families = {}
        for family, state in previous.items():
            rules_path = os.path.join(folder, "rules." + family)
            write_file_atomic(rules_path, render.render_restore(state), 0o600)
            families[family] = {"save": resolved["tools"][family]["save"],
                                "restore": resolved["tools"][family]["restore"], "rules": rules_path}
            expected = dict((table, dict(data["policies"])) for table, data in expect_policies.get(family, {}).items()
                            if data["policies"])
            if expected:
                families[family]["expect_policies"] = expected
        config_path = os.path.join(folder, "config.json")
        loader_path = os.path.join(folder, "loader.py")
        write_file_atomic(config_path, loader.render_config(prefix, families), 0o600)
        write_file_atomic(loader_path, loader.LOADER_SOURCE, 0o700)
        done = os.path.join(folder, "done")
        # Whoever creates "done" first wins: the timer (then it restores) or the confirmation (then it cancels).
        fire = "if mkdir %s 2>/dev/null; then %s %s %s; echo $? > %s; fi" % (
            shlex.quote(done), shlex.quote(sys.executable), shlex.quote(loader_path), shlex.quote(config_path),
            shlex.quote(os.path.join(folder, "rc")))
        return token, self.start_timer(folder, token, fire, timeout, method)

    def start_timer(self, folder, token, fire, timeout, method):
        """Run the shell command ``fire`` after ``timeout`` seconds, detached (systemd-run or setsid); the unit or
        helper pid is recorded in ``folder`` so :meth:`confirm` can stop it. Returns the method used."""
        if method == "auto":
            method = "systemd" if (self.which("systemd-run") and self._systemd_pid1()
                                   and environment.same_netns_as_pid1()) else "fork"
        if method == "systemd":
            unit = "nodeguard-conntrack-rollback-" + token
            rc, _out, err = self.run([self.which("systemd-run"), "--unit", unit, "--on-active=%ds" % timeout,
                                      "--timer-property=AccuracySec=100ms", "--collect", "/bin/sh", "-c", fire])
            if rc != 0:
                raise FirewallError("systemd-run could not start the rollback timer: %s" % err.strip())
            write_file_atomic(os.path.join(folder, "unit"), unit + "\n", 0o600)
        else:
            setsid = self.which("setsid")
            if not setsid:
                raise FirewallError("rollback_timeout needs setsid (util-linux) or systemd-run on the host")
            # setsid -f forks a new session leader; it records its pid, detaches from our pipes, sleeps, fires.
            script = "echo $$ > %s; exec </dev/null >/dev/null 2>&1; sleep %d; %s" % (
                shlex.quote(os.path.join(folder, "pid")), timeout, fire)
            rc, _out, err = self.run([setsid, "-f", "/bin/sh", "-c", script])
            if rc != 0:
                raise FirewallError("could not start the rollback helper: %s" % err.strip())
            for _wait in range(50):
                if os.path.exists(os.path.join(folder, "pid")):
                    break
                time.sleep(0.05)
        return method

    def pending_rollbacks(self, state_dir):
        if not os.path.isdir(state_dir):
            return []
        return sorted(name[len("rollback-"):] for name in os.listdir(state_dir)
                      if name.startswith("rollback-") and not os.path.exists(os.path.join(state_dir, name, "done")))

    def confirm(self, state_dir, token, check_mode):
        """Cancel a pending rollback. Returns the tokens cancelled; raises if the token's rollback already ran."""
        tokens = [token] if token else self.pending_rollbacks(state_dir)
        cancelled = []
        for item in tokens:
            if not all(c in "0123456789abcdef" for c in item) or not item:
                raise FirewallError("rollback_token %r is not a token returned by this module" % item)
            folder = os.path.join(state_dir, "rollback-" + item)
            if not os.path.isdir(folder):
                raise FirewallError("no rollback with token %s is known in %s" % (item, state_dir))
            if os.path.exists(os.path.join(folder, "done")) and not os.path.exists(os.path.join(folder, "cancelled")):
                raise FirewallError("too late: the rollback timer %s already fired and restored the previous rules "
                                    "(the controller did not confirm in time)" % item, rolled_back=True)
            if os.path.exists(os.path.join(folder, "cancelled")):
                continue
            if check_mode:
                cancelled.append(item)
                continue
            try:
                os.mkdir(os.path.join(folder, "done"))
            except OSError:
                raise FirewallError("too late: the rollback timer %s fired while confirming" % item, rolled_back=True)
            os.mkdir(os.path.join(folder, "cancelled"))
            self._stop_timer(folder)
            cancelled.append(item)
        return cancelled

    def _stop_timer(self, folder):
        unit = read_or_none(os.path.join(folder, "unit"))
        if unit:
            systemctl = self.which("systemctl")
            if systemctl:
                self.run([systemctl, "stop", unit.strip() + ".timer"])
            return
        pid = read_or_none(os.path.join(folder, "pid"))
        if pid and pid.strip().isdigit():
            try:
                # the helper is its own session and process-group leader (setsid): end the group (sh + sleep)
                os.killpg(int(pid.strip()), 15)
            except OSError:
                pass

    # -- persistence ------------------------------------------------------------------------------------------------
    def planned_files(self, params, resolved, model, desired):
        """{path: (content, mode)} of every persisted file."""
        files = {}
        families = {}
        for family in model["families"]:
            rules_path = params["rules_%s_path" % ("v4" if family == "ipv4" else "v6")]
            files[rules_path] = (render.render_restore(desired[family]), 0o600)
            families[family] = {"save": resolved["tools"][family]["save"],
                                "restore": resolved["tools"][family]["restore"], "rules": rules_path}
        files[params["config_path"]] = (loader.render_config(model["prefix"], families), 0o644)
        files[params["loader_path"]] = (loader.LOADER_SOURCE, 0o755)
        if params.get("unit_path"):
            interpreter = loader.boot_interpreter(os.path.exists, sys.executable,
                                                  getattr(sys, "base_prefix", sys.prefix) != sys.prefix)
            if interpreter is None:
                raise FirewallError("no system Python 3 (%s) for the boot-time loader, and the module runs in a "
                                    "virtualenv that may not exist at boot" % ", ".join(loader.SYSTEM_PYTHONS))
            files[params["unit_path"]] = (loader.render_unit(interpreter, params["loader_path"],
                                                             params["config_path"]), 0o644)
        return files

    def files_to_change(self, files):
        changed = []
        for path, (content, mode) in sorted(files.items()):
            if read_or_none(path) != content:
                changed.append(path)
            elif (os.stat(path).st_mode & 0o7777) != mode:
                changed.append(path)
        return changed

    def write_files(self, files, paths):
        for path in paths:
            content, mode = files[path]
            write_file_atomic(path, content, mode)

    def persisted_paths(self, params):
        paths = [params["rules_v4_path"], params["rules_v6_path"], params["config_path"], params["loader_path"]]
        unit = params.get("unit_path")
        if unit:
            paths.append(unit)
            paths.extend(unit_enable_links(unit))
        return [path for path in paths if path and os.path.lexists(path)]

    def remove_files(self, paths):
        for path in paths:
            os.unlink(path)
