# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The boot-time loader, its configuration and its systemd unit (text only).

Private to the collection. Pure: builds file contents. The loader is a small stand-alone Python 3 script (stdlib
only) written onto the node. It is used at boot by ``nodeguard-conntrack-firewall.service`` and by the rollback
timer. For every family it reads the live rule set, removes whatever the prefix owns (owned chains and the jump
rules into them) and loads the rules file, in one ``iptables-restore --noflush`` transaction per table, so it is
idempotent: running it twice, or after the rules are already loaded, never duplicates anything. A missing or empty
rules file means "own nothing": the loader then only removes.
"""

import json

UNIT_NAME = "nodeguard-conntrack-firewall.service"

LOADER_SOURCE = r'''#!/usr/bin/env python3
# nodeguard.conntrack firewall loader -- written by nodeguard.conntrack.iptables_baseline; do not edit.
# Replaces the chains owned by the configured prefix (and the jump rules into them) with the rules file,
# leaving every other chain and rule untouched. Idempotent.
import json
import os
import shlex
import subprocess
import sys

ENV = {"LANG": "C", "LC_ALL": "C", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def find(path):
    if os.path.exists(path):
        return path
    for folder in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        candidate = os.path.join(folder, os.path.basename(path))
        if os.path.exists(candidate):
            return candidate
    raise SystemExit("nodeguard-conntrack-firewall: %s not found" % path)


def target(spec):
    try:
        words = shlex.split(spec)
    except ValueError:
        words = spec.split()
    for index, word in enumerate(words[:-1]):
        if word in ("-j", "--jump", "-g", "--goto"):
            return words[index + 1]
    return None


# the only chain names the baseline ever creates: <prefix><suffix>. A chain that merely starts with the prefix
# (SSH-GUARD for the prefix SSH-) belongs to somebody else.
SUFFIXES = ("INPUT", "INPUT-INVALID", "FORWARD", "FORWARD-INVALID", "FORWARD-DNAT", "PREROUTING", "OUTPUT")


def owned_names(prefix):
    return set(prefix + suffix for suffix in SUFFIXES)


def live_owned(text, prefix):
    """{table: (owned chains, [jump rule lines as -D commands], {built-in chain: policy})}"""
    names = owned_names(prefix)
    out = {}
    table = None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("*"):
            table = line[1:]
            out.setdefault(table, ([], [], {}))
        elif line.startswith(":") and table:
            parts = line[1:].split()
            if parts[0] in names:
                out[table][0].append(parts[0])
            elif len(parts) > 1 and parts[1] != "-":
                out[table][2][parts[0]] = parts[1]
        elif line.startswith("[") and "] -A " in line:
            line = line.split("] ", 1)[1]
        if line.startswith("-A ") and table:
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[1] not in names:
                name = target(parts[2])
                if name in names:
                    out[table][1].append("-D %s %s" % (parts[1], parts[2]))
    return out


def wanted(text):
    """{table: (declarations, other lines)} from a rules file."""
    out = {}
    table = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            table = line[1:]
            out.setdefault(table, ([], []))
        elif line == "COMMIT":
            table = None
        elif table is not None:
            out[table][0 if line.startswith(":") else 1].append(line)
    return out


def build(live_text, rules_text, prefix, expect_policies=None):
    """The restore script. ``expect_policies`` ({table: {chain: policy}}): a policy line of the rules file is used
    only while the live policy still has that value (a rollback never undoes another tool's policy change)."""
    live = live_owned(live_text, prefix)
    want = wanted(rules_text)
    expect = expect_policies or {}
    lines = []
    for table in sorted(set(want) | set(t for t, (chains, jumps, _p) in live.items() if chains or jumps)):
        chains, jumps, policies = live.get(table, ([], [], {}))
        declared, body = want.get(table, ([], []))
        keep = []
        for line in declared:
            parts = line[1:].split()
            chain = parts[0]
            if (len(parts) > 1 and parts[1] != "-" and chain in expect.get(table, {})
                    and policies.get(chain) != expect[table][chain]):
                continue
            keep.append(line)
        declared_names = [d[1:].split()[0] for d in declared]
        lines.append("*" + table)
        lines += keep
        lines += [":%s - [0:0]" % c for c in chains if c not in declared_names]
        lines += jumps
        lines += body
        lines += ["-X %s" % c for c in chains if c not in declared_names]
        lines.append("COMMIT")
    return "\n".join(lines) + "\n" if lines else ""


def main(argv):
    with open(argv[1]) as handle:
        config = json.load(handle)
    failed = 0
    for family, item in sorted(config["families"].items()):
        rules = ""
        if item.get("rules") and os.path.exists(item["rules"]):
            with open(item["rules"]) as handle:
                rules = handle.read()
        save = subprocess.run([find(item["save"])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, env=ENV)
        if save.returncode != 0:
            sys.stderr.write("%s: save failed: %s\n" % (family, save.stderr))
            failed += 1
            continue
        script = build(save.stdout, rules, config["prefix"], item.get("expect_policies"))
        if script.strip() == "":
            continue
        proc = subprocess.run([find(item["restore"]), "--noflush"], input=script, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True, env=ENV)
        if proc.returncode != 0:
            sys.stderr.write("%s: restore failed: %s\n" % (family, proc.stderr))
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
'''


def render_config(prefix, families):
    """``families`` is {family: {"save": path, "restore": path, "rules": path}}."""
    return json.dumps({"prefix": prefix, "families": families}, indent=2, sort_keys=True) + "\n"


# a Python 3 that belongs to the operating system, so it exists at boot whatever ran the module (a virtualenv or a
# pyenv interpreter can vanish, and the host would then boot without its baseline)
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/libexec/platform-python", "/bin/python3", "/usr/local/bin/python3")
# services that restore whole tables at boot; the loader runs after them so they cannot wipe the baseline or bring
# back a stale copy of it
ORDER_AFTER = ("netfilter-persistent.service", "iptables.service", "ip6tables.service", "nftables.service",
               "ebtables.service", "firewalld.service")


def boot_interpreter(exists, running, in_virtualenv):
    """The interpreter the unit starts the loader with: the first system Python 3 that ``exists``; else the
    interpreter running now when it is not a virtualenv's; else None (the caller refuses)."""
    for path in SYSTEM_PYTHONS:
        if exists(path):
            return path
    return None if in_virtualenv else running


def render_unit(interpreter, loader_path, config_path):
    return "\n".join([
        "# Managed by nodeguard.conntrack.iptables_baseline; do not edit.",
        "[Unit]",
        "Description=nodeguard.conntrack firewall baseline (owned chains only, --noflush)",
        "Documentation=https://github.com/nodeguard/conntrack/blob/main/docs/firewall.md",
        "DefaultDependencies=no",
        "Wants=network-pre.target",
        "Before=network-pre.target shutdown.target",
        "After=local-fs.target systemd-modules-load.service " + " ".join(ORDER_AFTER),
        "Conflicts=shutdown.target",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=%s %s %s" % (interpreter, loader_path, config_path),
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])
