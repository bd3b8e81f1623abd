#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: nftables_baseline
short_description: The conntrack firewall baseline as one nftables table the collection owns
version_added: 0.2.0
description:
  - Renders the same model as M(nodeguard.conntrack.iptables_baseline) (established,related first, scoped invalid
    drop, declared services, notrack with untracked handling, ICMP/ICMPv6 essentials) as table
    C(inet nodeguard_conntrack) (C(ip)/C(ip6) when one family is managed) and applies it with C(nft -f) in one
    transaction that deletes and re-creates only that table. No other table is read into it, written or flushed.
  - Every base chain on a hook gets a say, whatever its table; an accept here does not get a packet past a drop in
    firewalld's, Docker's or kube-proxy's table, and theirs do not get past a drop here. RV(cannot_override) lists the
    other tables' chains on the same hooks that drop on their own, and a warning names those that drop by default.
  - For idempotence the table's comment carries a digest of the rendered table, and the rule count of every owned chain
    is compared, so a second run changes nothing and a table edited by hand is rewritten.
author:
  - nodeguard.conntrack contributors (@nodeguard)
extends_documentation_fragment:
  - nodeguard.conntrack.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
requirements:
  - the C(nft) command (nftables 0.9.7 or later for table comments) and a kernel with nf_tables (5.10 or later).
notes:
  - Rollback reuses the iptables baseline's timer (C(systemd-run) or a detached C(setsid) helper); it reloads the
    previous owned table (or deletes ours when there was none).
options:
  state:
    description:
    - V(present) makes the owned chains match the model.
    - V(absent) removes every owned chain, every jump rule into them, the persisted files and resets policies listed in
      O(policies) to C(ACCEPT).
    type: str
    choices:
    - present
    - absent
    default: present
  families:
    description: Address families to manage.
    type: list
    elements: str
    choices:
    - ipv4
    - ipv6
    default:
    - ipv4
    - ipv6
  input:
    description: The input section (base chain C(input) of the owned table, on the input hook).
    type: dict
    suboptions:
      enabled:
        description: Write the input chain.
        type: bool
        default: true
      loopback:
        description: Accept everything arriving on C(lo).
        type: bool
        default: true
      icmp:
        description:
        - Accept ICMP errors (destination unreachable, time exceeded, parameter problem) and for IPv6 also packet too big
          and neighbour discovery (hop limit 255).
        type: bool
        default: true
      icmp_echo:
        description: Accept echo requests (ping) when O(input.icmp) is on.
        type: bool
        default: true
      invalid_drop:
        description: Drop packets in conntrack state INVALID, limited to the scope given here.
        type: dict
        suboptions:
          enabled:
            description: Drop ct state invalid on input.
            type: bool
            default: true
          in_interfaces:
            description: Only packets arriving on these interfaces (C(+) suffix is a wildcard). Empty means all.
            type: list
            elements: str
          sources:
            description: Only packets from these CIDRs. Empty means all.
            type: list
            elements: str
          exempt_sources:
            description: Never drop INVALID packets from these CIDRs.
            type: list
            elements: str
          exempt_interfaces:
            description: Never drop INVALID packets arriving on these interfaces.
            type: list
            elements: str
          log:
            description: Log dropped INVALID packets, rate-limited by O(input.invalid_drop.log_rate).
            type: bool
            default: false
          log_rate:
            description: Log rate such as V(5/min).
            type: str
            default: 5/min
          log_prefix:
            description: Kernel log prefix (at most 29 characters).
            type: str
            default: 'ngct-invalid: '
      services:
        description: NEW flows to accept.
        type: list
        elements: dict
        suboptions:
          name:
            description: Name of the service; used as the rule comment when O(input.services[].comment) is not set.
            type: str
          proto:
            description: Protocol.
            type: str
            choices:
            - tcp
            - udp
            - sctp
            default: tcp
          ports:
            description: Destination ports or ranges (V(22), V(8000:8100) or V(8000-8100)).
            type: list
            elements: raw
            required: true
          sources:
            description: Source CIDRs (IPv4 and IPv6 may be mixed). Empty means any. A service whose sources are all of
              one family is not opened at all in the other family.
            type: list
            elements: str
          interfaces:
            description: Incoming interfaces. Empty means any.
            type: list
            elements: str
          comment:
            description: Rule comment (letters, digits, spaces and C(_.,:;/=+()[]#@%-)).
            type: str
      final_action:
        description:
        - What happens to packets that reach the end of the owned input chain. V(return) ends the chain with policy accept,
          so the other tables on the hook decide (safe on a fresh host); V(drop) or V(reject) enforce "only what is
          declared".
        type: str
        choices:
        - return
        - drop
        - reject
        default: return
  forward:
    description: The forward section (base chain C(forward) of the owned table). Off by default.
    type: dict
    suboptions:
      enabled:
        description: Write the forward chain.
        type: bool
        default: false
      accept_dnat:
        description:
        - Accept flows conntrack has DNATed (C(ct status dnat accept)), for port forwarding through this host.
        - Docker's, kube-proxy's and CNI tables on the forward hook still get their own say on them.
        type: bool
        default: false
      invalid_drop:
        description:
        - Drop INVALID forwarded packets in this scope. Off by default, because with asymmetric routing or several uplinks
          the forward path often sees only one direction of a flow.
        type: dict
        suboptions:
          enabled:
            description: Drop ct state invalid on forward.
            type: bool
            default: false
          in_interfaces:
            description: Only packets arriving on these interfaces.
            type: list
            elements: str
          out_interfaces:
            description: Only packets leaving on these interfaces.
            type: list
            elements: str
          sources:
            description: Only packets from these CIDRs.
            type: list
            elements: str
          exempt_sources:
            description: Never drop INVALID packets from these CIDRs.
            type: list
            elements: str
          exempt_interfaces:
            description: Never drop INVALID packets arriving on these interfaces.
            type: list
            elements: str
          log:
            description: Log dropped INVALID packets, rate-limited.
            type: bool
            default: false
          log_rate:
            description: Log rate such as V(5/min).
            type: str
            default: 5/min
          log_prefix:
            description: Kernel log prefix (at most 29 characters).
            type: str
            default: 'ngct-invalid: '
      services:
        description: NEW forwarded flows to accept.
        type: list
        elements: dict
        suboptions:
          name:
            description: Name of the service, used as comment by default.
            type: str
          proto:
            description: Protocol.
            type: str
            choices:
            - tcp
            - udp
            - sctp
            default: tcp
          ports:
            description: Destination ports or ranges.
            type: list
            elements: raw
            required: true
          sources:
            description: Source CIDRs.
            type: list
            elements: str
          destinations:
            description: Destination CIDRs.
            type: list
            elements: str
          interfaces:
            description: Incoming interfaces.
            type: list
            elements: str
          out_interfaces:
            description: Outgoing interfaces.
            type: list
            elements: str
          comment:
            description: Rule comment.
            type: str
      final_action:
        description: What happens to forwarded packets reaching the end of the owned forward chain.
        type: str
        choices:
        - return
        - drop
        - reject
        default: return
  notrack:
    description:
    - High-rate stateless flows exempted from connection tracking (chains C(raw_prerouting) and C(raw_output) at priority
      -300), with a matching C(ct state untracked) accept in the input chain.
    - Every rule is bounded to the declared flow. Only packets addressed to this host are exempted (C(fib daddr type
      local)), so forwarded and NATed packets stay tracked, unless O(notrack[].forwarded=true). Replies of an outgoing
      flow are matched by the remote port and O(notrack[].local_ports), and a TCP SYN is never exempted.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name, used as comment by default.
        type: str
      proto:
        description: Protocol.
        type: str
        choices:
        - tcp
        - udp
        - sctp
        default: tcp
      ports:
        description: Ports or ranges of the service.
        type: list
        elements: raw
        required: true
      sources:
        description: Remote CIDRs.
        type: list
        elements: str
      destinations:
        description: Local CIDRs.
        type: list
        elements: str
      interfaces:
        description: Interfaces.
        type: list
        elements: str
      direction:
        description: V(in) when this host serves the ports, V(out) when it is the client, V(both).
        type: str
        choices:
        - in
        - out
        - both
        default: in
      local_ports:
        description:
        - For O(notrack[].direction=out) or V(both), the local (client) source ports the replies arrive at. The stateless
          accept of the replies is limited to them.
        - Defaults to V(32768:60999), the default C(net.ipv4.ip_local_port_range) of Linux.
        type: list
        elements: raw
        version_added: 0.2.0
      forwarded:
        description:
        - The flow is forwarded through this host to or from O(notrack[].destinations) (hosts behind it) instead of being
          local. Both directions are exempted in prerouting without the local-address limit, and the untracked packets
          are accepted in the forward chain (needs O(forward.enabled=true)).
        type: bool
        default: false
        version_added: 0.2.0
      accept:
        description: Also accept the untracked packets in the input chain (the forward chain for a forwarded flow).
        type: bool
        default: true
      comment:
        description: Rule comment.
        type: str
  policies:
    description:
    - Policies of the owned table's base chains (V(DROP) creates the chain if its section is off). Unset means accept.
    - Another table's accept never overrides a drop here, and an accept here never overrides another table's drop.
    - Setting V(DROP) without a rollback timer risks a lockout; use O(rollback_timeout).
    type: dict
    suboptions:
      input:
        description: Policy of the input chain.
        type: str
        choices:
        - ACCEPT
        - DROP
      forward:
        description: Policy of the forward chain.
        type: str
        choices:
        - ACCEPT
        - DROP
      output:
        description: Policy of an output chain (created only for V(DROP)).
        type: str
        choices:
        - ACCEPT
        - DROP
  rollback_timeout:
    description:
    - Seconds after which the previous owned table is restored unless confirmed with O(confirm=true). V(0) disables the
      timer. Only started when the rules change.
    type: int
    default: 0
  rollback_method:
    description:
    - How the timer runs. V(systemd) uses C(systemd-run) (only correct in the host's own network namespace), V(fork) a
      detached C(setsid) helper, V(auto) picks C(systemd) when PID 1 is systemd and the module runs in PID 1's network
      namespace, else C(fork).
    type: str
    choices:
    - auto
    - systemd
    - fork
    default: auto
  confirm:
    description:
    - Cancel a pending rollback (the one named by O(rollback_token), or every pending one). The rest of the call behaves
      as usual, so the same model can be passed again; pending persistence is written now.
    - Fails when the timer already fired.
    type: bool
    default: false
  rollback_token:
    description: Token returned as RV(rollback_token) by the call that started the timer.
    type: str
  state_dir:
    description: Directory for rollback state (saved previous table, helper pid).
    type: path
    default: /run/nodeguard/conntrack
  persist:
    description:
    - Write O(rules_path) (declares, deletes and defines only the owned table) and O(unit_path) so the baseline comes back
      after a reboot. C(/etc/nftables.conf) is never written and no other table is captured.
      With a rollback timer, persistence waits for the confirmation call.
    - Enabling the unit is left to the caller (the C(conntrack_firewall) role does it).
    type: bool
    default: false
  priority:
    description:
      - Priority of the owned input and forward base chains (notrack chains use -300, before conntrack).
      - The order among base chains on one hook; it never lets an accept override another table's drop. V(0) is
        C(filter), where Docker and kube-proxy sit; firewalld's chains run at V(10), after it.
    type: int
    default: 0
  rules_path:
    description: The persisted transaction loaded at boot (only the owned table).
    type: path
    default: /etc/nodeguard/conntrack/nftables.nft
  unit_path:
    description: The systemd unit that loads O(rules_path) (C(After=nftables.service), so a distribution rule set with
      C(flush ruleset) runs first). Empty to write no unit.
    type: path
    default: /etc/systemd/system/nodeguard-conntrack-nftables.service
  nft_path:
    description: The nft binary the unit runs.
    type: path
    default: /usr/sbin/nft

seealso:
  - module: nodeguard.conntrack.iptables_baseline
  - module: nodeguard.conntrack.nftables_audit
"""

EXAMPLES = r"""
- name: Baseline as an nftables table, ssh and https open, everything else dropped
  nodeguard.conntrack.nftables_baseline:
    input:
      services:
        - {name: ssh, ports: [22]}
        - {name: https, ports: [443]}
      final_action: drop
    persist: true

- name: Remove the table and its boot files
  nodeguard.conntrack.nftables_baseline:
    state: absent
"""

RETURN = r"""
table:
  description: The owned table (family and name); V(null) with O(state=absent).
  returned: always
  type: str
  sample: inet nodeguard_conntrack
digest:
  description: Digest of the rendered table (kept in the table's comment).
  returned: always
  type: str
  sample: 95fd459dbb29e2de
cannot_override:
  description: Other tables' base chains on the prerouting, input and forward hooks that drop on their own (by default
    or with drop/reject rules). An accept in the owned table does not get a packet past them.
  returned: with O(state=present)
  type: list
  elements: dict
  sample: [{"family": "inet", "table": "firewalld", "chain": "filter_INPUT", "hook": "input", "priority": 10,
            "policy": "accept", "drops_by_default": true, "drop_rules": 3}]
rollback_token:
  description: Token of the rollback timer started by this call (pass it back with O(confirm=true)), else V(null).
  returned: always
  type: str
rollback_method:
  description: V(systemd) or V(fork) when a timer was started.
  returned: always
  type: str
confirmed:
  description: Rollback tokens cancelled by O(confirm=true).
  returned: with O(confirm=true)
  type: list
  elements: str
files_changed:
  description: Persisted files written (or removed).
  returned: always
  type: list
  elements: str
persist_pending:
  description: Persistence waits for the confirmation of the rollback timer.
  returned: always
  type: bool
diff:
  description: The owned tables before (as nft lists them) and the table after (as rendered).
  returned: when not confirming
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError, fail_json, \
    host_io
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import nft_baseline

_LIST_STR = dict(type="list", elements="str")


def _invalid_spec(forward):
    spec = dict(
        enabled=dict(type="bool", default=not forward),
        in_interfaces=_LIST_STR,
        sources=_LIST_STR,
        exempt_sources=_LIST_STR,
        exempt_interfaces=_LIST_STR,
        log=dict(type="bool", default=False),
        log_rate=dict(type="str", default="5/min"),
        log_prefix=dict(type="str", default="ngct-invalid: "),
    )
    if forward:
        spec["out_interfaces"] = _LIST_STR
    return spec


def _service_spec(forward):
    spec = dict(
        name=dict(type="str"),
        proto=dict(type="str", choices=["tcp", "udp", "sctp"], default="tcp"),
        ports=dict(type="list", elements="raw", required=True),
        sources=_LIST_STR,
        interfaces=_LIST_STR,
        comment=dict(type="str"),
    )
    if forward:
        spec["destinations"] = _LIST_STR
        spec["out_interfaces"] = _LIST_STR
    return spec


def argument_spec():
    return dict(
        state=dict(type="str", choices=["present", "absent"], default="present"),
        families=dict(type="list", elements="str", choices=["ipv4", "ipv6"], default=["ipv4", "ipv6"]),
        input=dict(type="dict", options=dict(
            enabled=dict(type="bool", default=True),
            loopback=dict(type="bool", default=True),
            icmp=dict(type="bool", default=True),
            icmp_echo=dict(type="bool", default=True),
            invalid_drop=dict(type="dict", options=_invalid_spec(False)),
            services=dict(type="list", elements="dict", options=_service_spec(False)),
            final_action=dict(type="str", choices=["return", "drop", "reject"], default="return"),
        )),
        forward=dict(type="dict", options=dict(
            enabled=dict(type="bool", default=False),
            accept_dnat=dict(type="bool", default=False),
            invalid_drop=dict(type="dict", options=_invalid_spec(True)),
            services=dict(type="list", elements="dict", options=_service_spec(True)),
            final_action=dict(type="str", choices=["return", "drop", "reject"], default="return"),
        )),
        notrack=dict(type="list", elements="dict", options=dict(
            name=dict(type="str"),
            proto=dict(type="str", choices=["tcp", "udp", "sctp"], default="tcp"),
            ports=dict(type="list", elements="raw", required=True),
            sources=_LIST_STR,
            destinations=_LIST_STR,
            interfaces=_LIST_STR,
            direction=dict(type="str", choices=["in", "out", "both"], default="in"),
            local_ports=dict(type="list", elements="raw"),
            forwarded=dict(type="bool", default=False),
            accept=dict(type="bool", default=True),
            comment=dict(type="str"),
        )),
        policies=dict(type="dict", options=dict(
            input=dict(type="str", choices=["ACCEPT", "DROP"]),
            forward=dict(type="str", choices=["ACCEPT", "DROP"]),
            output=dict(type="str", choices=["ACCEPT", "DROP"]),
        )),
        priority=dict(type="int", default=0),
        rollback_timeout=dict(type="int", default=0),
        rollback_method=dict(type="str", choices=["auto", "systemd", "fork"], default="auto"),
        confirm=dict(type="bool", default=False),
        rollback_token=dict(type="str", no_log=False),
        state_dir=dict(type="path", default="/run/nodeguard/conntrack"),
        persist=dict(type="bool", default=False),
        rules_path=dict(type="path", default="/etc/nodeguard/conntrack/nftables.nft"),
        unit_path=dict(type="path", default="/etc/systemd/system/nodeguard-conntrack-nftables.service"),
        nft_path=dict(type="path", default="/usr/sbin/nft"),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        with host_io("host I/O"):
            result = nft_baseline.run(nft_baseline.NftHost(module), dict(module.params), module.check_mode)
    except NodeguardError as exc:
        fail_json(module, exc)
    for warning in result.pop("warnings"):
        module.warn(warning)
    if not module._diff:  # pylint: disable=protected-access
        result.pop("diff", None)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
