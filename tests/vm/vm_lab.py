"""QEMU VMs with Debian's own kernels for the vm tier (scripts/lab.sh up --vm).

A VmLab is one lab of VMs (one per suite: bookworm = Debian 12 / kernel 6.1, trixie = Debian 13 /
kernel 6.12) reached with SSH over forwarded 127.0.0.1 ports. Ansible runs against its inventory with
the json callback, so each test reads every host's task results. Reboots are real (systemctl reboot;
the new boot id proves it) and a VM that does not come back in time fails with its console log tail.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterable, List, Optional, Sequence

import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS_PATH = os.pathsep.join([os.path.join(REPO_ROOT, ".build", "collections"),
                                    os.path.join(REPO_ROOT, ".build", "test-collections")])
SUITES = ("bookworm", "trixie")
BOOT_TIMEOUT = float(os.environ.get("NODEGUARD_VM_BOOT_TIMEOUT", "420"))
C_ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
         "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}

# seconds each timed step took, printed at the end of the run (conftest's terminal summary)
TIMINGS: List[tuple] = []
# observations worth a line in the summary (not assertions)
NOTES: List[str] = []


def note(text: str) -> None:
    NOTES.append(text)


def timed(label: str, seconds: float) -> None:
    TIMINGS.append((label, seconds))


class VmLab:
    def __init__(self, prefix: str, suites: Sequence[str] = SUITES):
        self.prefix = prefix
        self.suites = list(suites)
        self.dir = os.path.join(REPO_ROOT, ".lab", prefix)
        self.hosts: Dict[str, Dict] = {}

    # ---- lifecycle -------------------------------------------------------------------------------
    def up(self) -> None:
        start = time.monotonic()
        proc = subprocess.run([os.path.join(REPO_ROOT, "scripts", "lab.sh"), "up", "--vm", "-n", str(len(self.suites)),
                               "-p", self.prefix, "--suite", ",".join(self.suites)],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=BOOT_TIMEOUT + 900,
                              env=dict(os.environ, **C_ENV), check=False)
        if proc.returncode != 0:
            raise AssertionError("lab.sh up --vm failed rc=%d\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))
        timed("lab up (%s, image cached or built, boot to SSH)" % "+".join(self.suites), time.monotonic() - start)
        with open(os.path.join(self.dir, "inventory.yml")) as handle:
            inv = yaml.safe_load(handle)
        self.hosts = inv["all"]["hosts"]

    def down(self) -> None:
        subprocess.run([os.path.join(REPO_ROOT, "scripts", "lab.sh"), "down", "-p", self.prefix],
                       cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)

    @property
    def inventory(self) -> str:
        return os.path.join(self.dir, "inventory.yml")

    def host_of(self, suite: str) -> str:
        return next(name for name, hv in self.hosts.items() if hv["lab_suite"] == suite)

    @property
    def names(self) -> List[str]:
        return sorted(self.hosts)

    def console_tail(self, host: str, lines: int = 40) -> str:
        try:
            with open(self.hosts[host]["lab_console_log"], errors="replace") as handle:
                return "".join(handle.readlines()[-lines:]).replace("\r", "")
        except OSError as exc:
            return "(no console log: %s)" % exc

    # ---- SSH -------------------------------------------------------------------------------------
    def ssh(self, host: str, script: str, check: bool = True, timeout: float = 120,
            input_text: Optional[str] = None) -> subprocess.CompletedProcess:
        argv = ["ssh", "-F", os.path.join(self.dir, "ssh_config"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                host, script]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=dict(os.environ, **C_ENV),
                                  input=input_text, stdin=None if input_text is not None else subprocess.DEVNULL,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            # e.g. a VM still booting: QEMU's forward accepts, sshd does not answer yet
            proc = subprocess.CompletedProcess(argv, 255, exc.stdout or "", "timed out after %s s" % timeout)
            if isinstance(proc.stdout, bytes):
                proc.stdout = proc.stdout.decode(errors="replace")
        if check and proc.returncode != 0:
            raise AssertionError("on %s: %r failed rc=%d\nstdout:\n%s\nstderr:\n%s"
                                 % (host, script, proc.returncode, proc.stdout, proc.stderr))
        return proc

    def out(self, host: str, script: str, timeout: float = 120) -> str:
        return self.ssh(host, script, timeout=timeout).stdout.strip()

    def boot_id(self, host: str) -> str:
        return self.out(host, "cat /proc/sys/kernel/random/boot_id")

    def reboot(self, hosts: Optional[Iterable[str]] = None, label: str = "reboot") -> None:
        """Reboot hosts at once and wait until each answers SSH with a new boot id."""
        hosts = list(hosts or self.names)
        before = {h: self.boot_id(h) for h in hosts}
        start = time.monotonic()
        for h in hosts:
            # the connection may drop before ssh sees an exit status
            self.ssh(h, "systemctl reboot", check=False, timeout=30)
        pending = set(hosts)
        took = {}
        deadline = start + BOOT_TIMEOUT
        while pending and time.monotonic() < deadline:
            for h in sorted(pending):
                proc = self.ssh(h, "cat /proc/sys/kernel/random/boot_id", check=False, timeout=30)
                if proc.returncode == 0 and proc.stdout.strip() and proc.stdout.strip() != before[h]:
                    took[h] = time.monotonic() - start
                    pending.discard(h)
            if pending:
                time.sleep(2)
        for h, seconds in took.items():
            timed("%s %s (%s) to SSH" % (label, h, self.hosts[h]["lab_suite"]), seconds)
        if pending:
            raise AssertionError("no SSH answer with a new boot id within %d s from %s\n%s" % (
                BOOT_TIMEOUT, sorted(pending),
                "\n".join("---- console of %s ----\n%s" % (h, self.console_tail(h)) for h in sorted(pending))))

    # ---- Ansible ---------------------------------------------------------------------------------
    def _ansible_env(self) -> Dict[str, str]:
        return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
                    ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_NOCOLOR="1",
                    ANSIBLE_HOST_KEY_CHECKING="false", ANSIBLE_RETRY_FILES_ENABLED="false",
                    ANSIBLE_PIPELINING="true", ANSIBLE_TIMEOUT="60", **C_ENV)

    def playbook(self, plays, extra_vars: Optional[Dict] = None, check: bool = False, expect_rc: Optional[int] = 0,
                 timeout: float = 900, label: Optional[str] = None, args: Sequence[str] = ()) -> "PlaybookRun":
        """Run plays (a list of play dicts, or the name of a playbook of the collection) over SSH."""
        with tempfile.TemporaryDirectory(prefix="ngvm-play-") as tmp:
            if isinstance(plays, str):
                target = plays
            else:
                target = os.path.join(tmp, "play.yml")
                with open(target, "w") as handle:
                    yaml.safe_dump(plays, handle, sort_keys=False)
            argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", self.inventory, target]
            if extra_vars:
                argv += ["-e", json.dumps(extra_vars)]
            if check:
                argv.append("--check")
            argv += list(args)
            start = time.monotonic()
            proc = subprocess.run(argv, cwd=REPO_ROOT, env=self._ansible_env(), capture_output=True, text=True,
                                  timeout=timeout, check=False, stdin=subprocess.DEVNULL)
            if label:
                timed(label, time.monotonic() - start)
        run = PlaybookRun(proc)
        if expect_rc is not None and proc.returncode != expect_rc:
            raise AssertionError("ansible-playbook rc=%d (wanted %d)\n%s\nstderr:\n%s"
                                 % (proc.returncode, expect_rc, run.summary(), proc.stderr[-4000:]))
        return run

    def module(self, name: str, args: Optional[Dict] = None, hosts: Optional[Iterable[str]] = None,
               expect_ok: bool = True, check: bool = False) -> Dict[str, Dict]:
        """One module on hosts (all by default) through a one-task play; {host: result}."""
        play = [{"hosts": ",".join(hosts or self.names), "gather_facts": False,
                 "tasks": [{"name": "run", name: args or {}, "ignore_errors": not expect_ok}]}]
        run = self.playbook(play, check=check, expect_rc=0)
        return run.task("run")


class PlaybookRun:
    """ansible-playbook's json callback output, by task name and host."""

    def __init__(self, proc: subprocess.CompletedProcess):
        self.proc = proc
        try:
            start = proc.stdout.index("{")
            self.doc = json.loads(proc.stdout[start:])
        except ValueError:
            self.doc = {"plays": [], "stats": {}}

    def task(self, name: str) -> Dict[str, Dict]:
        """{host: result} of the task with this name (role prefix ``ns.coll.role : `` left out), merged over the
        plays a ``serial`` playbook runs it in; a later run of the task for a host wins unless it was skipped."""
        found = None
        for play in self.doc.get("plays", []):
            for task in play.get("tasks", []):
                if task["task"]["name"] == name or task["task"]["name"].endswith(" : " + name):
                    found = dict(found or {})
                    for host, res in task["hosts"].items():
                        # a skipped run never hides a run that did something
                        if not (res.get("skipped") and host in found):
                            found[host] = res
        if found is None:
            raise AssertionError("no task %r in the run\n%s" % (name, self.summary()))
        return found

    def failed_task(self, host: str) -> Optional[str]:
        """Name of the task that failed or found host unreachable, or None."""
        for play in self.doc.get("plays", []):
            for task in play.get("tasks", []):
                res = task["hosts"].get(host)
                if res and (res.get("failed") or res.get("unreachable")) and not res.get("ignore_errors"):
                    return task["task"]["name"]
        return None

    @property
    def stats(self) -> Dict[str, Dict]:
        return self.doc.get("stats", {})

    def summary(self) -> str:
        lines = []
        for play in self.doc.get("plays", []):
            for task in play.get("tasks", []):
                for host, res in task["hosts"].items():
                    if res.get("failed"):
                        state = "FAILED"
                    else:
                        state = "changed" if res.get("changed") else ("skipped" if res.get("skipped") else "ok")
                    detail = res.get("msg", "") if res.get("failed") else ""
                    lines.append("%s | %s | %s %s" % (host, task["task"]["name"], state, str(detail)[:600]))
        lines.append("stats: %s" % json.dumps(self.stats))
        if not self.doc.get("plays"):
            lines.append("raw stdout:\n" + self.proc.stdout[-4000:])
        return "\n".join(lines)
