# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse ``iptables-save`` / ``ip6tables-save`` output and extract what the baseline owns.

Private to the collection. Pure: text in, data out.

A parsed rule set is ``{table: {"policies": {chain: policy}, "chains": [names in order], "rules": {chain: [spec]}}}``
where ``spec`` is the rule text after ``-A CHAIN`` exactly as iptables-save printed it (packet counters removed).

An *owned state* is ``{table: {"chains": {name: [spec]}, "jumps": [(chain, position, spec)], "policies": {}}}``:
the chains named ``<prefix><suffix>`` for the baseline's suffixes (not every chain that starts with the
prefix), and every rule elsewhere that jumps (``-j``/``-g``) into one of them,
with its 1-based position in its chain, or -1 when it is the last rule of its chain (and not also the first).
"""

import re
import shlex

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import ParseError

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "raw": ("PREROUTING", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
_COUNTERS_RE = re.compile(r"^\[\d+:\d+\]\s+")


class SaveParseError(ParseError):
    """iptables-save output that does not look like iptables-save output."""


def parse_save(text):
    """Parse iptables-save text into a rule set (see module docstring)."""
    tables = {}
    current = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("*"):
            name = line[1:].strip()
            current = tables.setdefault(name, {"policies": {}, "chains": [], "rules": {}})
            continue
        if current is None:
            raise SaveParseError("line %d: %r outside of a table" % (lineno, line))
        if line == "COMMIT":
            current = None
            continue
        if line.startswith(":"):
            parts = line[1:].split()
            if not parts:
                raise SaveParseError("line %d: empty chain declaration" % lineno)
            chain = parts[0]
            policy = parts[1] if len(parts) > 1 else "-"
            if chain not in current["chains"]:
                current["chains"].append(chain)
                current["rules"].setdefault(chain, [])
            if policy != "-":
                current["policies"][chain] = policy
            continue
        line = _COUNTERS_RE.sub("", line)
        if line.startswith("-A "):
            parts = line.split(None, 2)
            if len(parts) < 2:
                raise SaveParseError("line %d: rule without a chain" % lineno)
            chain = parts[1]
            spec = parts[2] if len(parts) > 2 else ""
            if chain not in current["chains"]:
                current["chains"].append(chain)
            current["rules"].setdefault(chain, []).append(spec)
            continue
        raise SaveParseError("line %d: unexpected %r" % (lineno, line))
    return tables


def tokens(spec):
    """Split a rule spec the way iptables-restore does (double quotes group words)."""
    try:
        return shlex.split(spec)
    except ValueError:
        return spec.split()


def rule_target(spec):
    """(kind, target) for a rule: kind is 'j' or 'g', or (None, None) when the rule has no target."""
    words = tokens(spec)
    for index, word in enumerate(words[:-1]):
        if word in ("-j", "--jump"):
            return "j", words[index + 1]
        if word in ("-g", "--goto"):
            return "g", words[index + 1]
    return None, None


# the suffixes of the chains the baseline creates (the same list as the loader's, which runs stand-alone)
OWNED_SUFFIXES = ("INPUT", "INPUT-INVALID", "FORWARD", "FORWARD-INVALID", "FORWARD-DNAT", "PREROUTING", "OUTPUT")


def owned_names(prefix):
    """The exact chain names a prefix owns; a foreign chain that merely starts with the prefix is not one."""
    return set(prefix + suffix for suffix in OWNED_SUFFIXES)


def owned_state(ruleset, prefix, policy_chains=None):
    """Extract the owned state from a parsed rule set.

    ``policy_chains`` is ``{table: [builtin chains]}`` whose policies the baseline manages; only those policies are
    included, so a policy set by someone else is never reported as ours.
    """
    policy_chains = policy_chains or {}
    names = owned_names(prefix)
    state = {}
    for table, data in ruleset.items():
        owned = [chain for chain in data["chains"] if chain in names]
        jumps = []
        for chain in data["chains"]:
            if chain in names:
                continue
            specs = data["rules"].get(chain, [])
            for position, spec in enumerate(specs, 1):
                target = rule_target(spec)[1]
                if target is not None and target in names:
                    # a jump that is last (and not also first) is reported at position -1: "appended"
                    jumps.append((chain, -1 if position == len(specs) and position > 1 else position, spec))
        policies = dict((chain, data["policies"][chain]) for chain in policy_chains.get(table, ())
                        if chain in data["policies"])
        if owned or jumps or policies:
            state[table] = {
                "chains": dict((chain, list(data["rules"].get(chain, []))) for chain in owned),
                "jumps": jumps,
                "policies": policies,
            }
    return state


def foreign_rules(ruleset, prefix):
    """Everything that is not owned, as comparable text: {table: [lines]} (used by tests and the audit)."""
    names = owned_names(prefix)
    out = {}
    for table, data in ruleset.items():
        lines = []
        for chain in data["chains"]:
            if chain in names:
                continue
            lines.append(":%s %s" % (chain, data["policies"].get(chain, "-")))
            for spec in data["rules"].get(chain, []):
                if rule_target(spec)[1] in names:
                    continue
                lines.append("-A %s %s" % (chain, spec))
        out[table] = lines
    return out


def has_rules(ruleset):
    """True when a rule set holds any rule or a non-ACCEPT policy (used to spot the second backend)."""
    for data in ruleset.values():
        if any(data["rules"].get(chain) for chain in data["chains"]):
            return True
        if any(policy != "ACCEPT" for policy in data["policies"].values()):
            return True
    return False
