#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: iptables_baseline
short_description: Own a stateful iptables baseline without touching anybody else's rules
version_added: 0.1.0
description:
  - Builds a stateful baseline from a structured model and applies it for IPv4 and IPv6 with C(iptables-restore --noflush).
  - The module owns only the chains whose name starts with O(prefix) plus one jump rule per hooked built-in chain,
    inserted at position 1 and marked with the comment C(nodeguard.conntrack baseline). Docker, kube-proxy,
    fail2ban, CNI and every other chain or rule are never flushed, renamed or reordered.
  - "The INPUT chain accepts loopback, then C(RELATED,ESTABLISHED), then drops INVALID (scoped), accepts the ICMP/ICMPv6
    essentials, then the NEW flows the model allows."
  - Every change is validated with C(--test) first and applied in one transaction per table; if anything fails the
    previous owned chains are put back.
  - An optional rollback timer (O(rollback_timeout)) restores the previous rules unless a second call with
    O(confirm=true) arrives in time.
  - With O(persist=true) the rules are written to the collection's own rules files and loaded at boot by
    C(nodeguard-conntrack-firewall.service), which never captures other software's chains.
  - See C(docs/firewall.md) for Docker/Kubernetes coexistence, INVALID scope, NOTRACK and the rollback pattern.
author:
  - nodeguard.conntrack contributors (@nodeguard)
extends_documentation_fragment:
  - nodeguard.conntrack.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the owned chains and jump rules before and after, as iptables-save text per family.
  platform:
    platforms: posix
requirements:
  - iptables (C(iptables-nft-restore)/C(iptables-legacy-restore) or a plain C(iptables-restore)) on the managed node.
  - C(setsid) (util-linux) or C(systemd-run) when O(rollback_timeout) is used.
notes:
  - The jump rules are inserted first in their built-in chains; a service allowed by the baseline is accepted before
    rules that other software appends to INPUT (for example fail2ban's), see C(docs/firewall.md).
  - Policies of built-in chains are changed only when O(policies) asks for it.
options:
  state:
    description:
      - V(present) makes the owned chains match the model.
      - V(absent) removes every owned chain, every jump rule into them, the persisted files and resets policies listed
        in O(policies) to C(ACCEPT).
    type: str
    choices: [present, absent]
    default: present
  prefix:
    description:
      - Name prefix of the chains this module owns. Must not overlap chains of other software (C(DOCKER), C(KUBE-), ...).
    type: str
    default: NG-CT-
  families:
    description: Address families to manage.
    type: list
    elements: str
    choices: [ipv4, ipv6]
    default: [ipv4, ipv6]
  backend:
    description:
      - Which iptables backend to write to. V(auto) uses the one the plain C(iptables) command uses (C(iptables -V)
        shows C(nf_tables) or C(legacy)).
      - A warning is returned when the other backend also holds rules.
    type: str
    choices: [auto, nft, legacy]
    default: auto
  input:
    description: The INPUT section (chain C(<prefix>INPUT), hooked from INPUT).
    type: dict
    suboptions:
      enabled:
        description: Hook and manage the INPUT section.
        type: bool
        default: true
      loopback:
        description: Accept everything arriving on C(lo).
        type: bool
        default: true
      icmp:
        description:
          - Accept ICMP errors (destination unreachable, time exceeded, parameter problem, for IPv6 also packet too
            big), before the INVALID drop so that errors about NOTRACK flows (INVALID to conntrack) keep path MTU
            discovery working.
          - IPv6 neighbour discovery (hop limit 255), MLD (ICMPv6 130-132 and 143, hop limit 1) and DHCPv6 replies
            (udp 547 to 546 between link-local addresses) are always accepted, whatever this option says.
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
            description: Drop INVALID on INPUT.
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
            description:
              - Log rate such as V(5/min) (C(N/sec), C(min), C(hour) or C(day)), burst 10. Written as iptables prints
                it back (V(60/min) becomes V(1/sec)); from V(8/day) to V(10000/sec).
            type: str
            default: 5/min
          log_prefix:
            description: Kernel log prefix (at most 29 characters).
            type: str
            default: "ngct-invalid: "
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
            choices: [tcp, udp, sctp]
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
      untracked_services:
        description:
          - Flows that another tool exempts from connection tracking (its own C(-j CT --notrack) or C(NOTRACK) rules
            in the raw table, such as kube-proxy's or a CNI's VXLAN port) to accept in state C(UNTRACKED). The
            baseline writes no raw-table rule for them.
          - Same fields as O(input.services).
        type: list
        elements: dict
        version_added: 0.2.0
        suboptions:
          name:
            description: Name of the flow; used as the rule comment when O(input.untracked_services[].comment) is not set.
            type: str
          proto:
            description: Protocol.
            type: str
            choices: [tcp, udp, sctp]
            default: tcp
          ports:
            description: Destination ports or ranges.
            type: list
            elements: raw
            required: true
          sources:
            description: Source CIDRs. Empty means any.
            type: list
            elements: str
          interfaces:
            description: Incoming interfaces. Empty means any.
            type: list
            elements: str
          comment:
            description: Rule comment.
            type: str
      final_action:
        description:
          - What happens to packets that reach the end of the owned INPUT chain. V(return) lets the rest of INPUT
            and its policy decide (safe on a fresh host), V(drop) or V(reject) enforce "only what is declared".
        type: str
        choices: [return, drop, reject]
        default: return
  forward:
    description: The FORWARD section (chain C(<prefix>FORWARD), hooked from FORWARD). Off by default.
    type: dict
    suboptions:
      enabled:
        description: Hook and manage the FORWARD section.
        type: bool
        default: false
      accept_dnat:
        description:
          - Accept flows conntrack has DNATed (C(--ctstate DNAT)), for port forwarding through this host.
          - The accept sits in C(<prefix>FORWARD-DNAT), jumped to from the end of FORWARD; the owned FORWARD chain
            returns DNATed flows, so C(DOCKER-USER), Docker's and CNI policy chains still decide on them first.
        type: bool
        default: false
      invalid_drop:
        description:
          - Drop INVALID forwarded packets in this scope. Off by default, because with asymmetric routing or several
            uplinks the forward path often sees only one direction of a flow.
        type: dict
        suboptions:
          enabled:
            description: Drop INVALID on FORWARD.
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
            description:
              - Log rate such as V(5/min) (C(N/sec), C(min), C(hour) or C(day)), burst 10. Written as iptables prints
                it back (V(60/min) becomes V(1/sec)); from V(8/day) to V(10000/sec).
            type: str
            default: 5/min
          log_prefix:
            description: Kernel log prefix (at most 29 characters).
            type: str
            default: "ngct-invalid: "
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
            choices: [tcp, udp, sctp]
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
        description: What happens to forwarded packets reaching the end of the owned FORWARD chain.
        type: str
        choices: [return, drop, reject]
        default: return
  notrack:
    description:
      - High-rate stateless flows exempted from connection tracking in the raw table (chains C(<prefix>PREROUTING)
        and C(<prefix>OUTPUT)), with a matching C(UNTRACKED) accept in the INPUT section.
      - Every rule is bounded to the declared flow. Only packets addressed to this host are exempted
        (C(-m addrtype --dst-type LOCAL)), so forwarded and NATed packets stay tracked, unless
        O(notrack[].forwarded=true). Replies of an outgoing flow are matched by the remote port and
        O(notrack[].local_ports), and a TCP SYN is never exempted.
    type: list
    elements: dict
    suboptions:
      name:
        description: Name, used as comment by default.
        type: str
      proto:
        description: Protocol.
        type: str
        choices: [tcp, udp, sctp]
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
        choices: [in, out, both]
        default: in
      local_ports:
        description:
          - For O(notrack[].direction=out) or V(both), the local (client) source ports the replies arrive at. The
            stateless accept of the replies is limited to them.
          - Defaults to V(32768:60999), the default C(net.ipv4.ip_local_port_range) of Linux.
        type: list
        elements: raw
        version_added: 0.2.0
      forwarded:
        description:
          - The flow is forwarded through this host to or from O(notrack[].destinations) (hosts behind it) instead of
            being local. Both directions are exempted in PREROUTING without the local-address limit, and the
            C(UNTRACKED) packets are accepted in the FORWARD section (needs O(forward.enabled=true)).
        type: bool
        default: false
        version_added: 0.2.0
      accept:
        description: Also accept the untracked packets in the INPUT section (the FORWARD section for a forwarded flow).
        type: bool
        default: true
      comment:
        description: Rule comment.
        type: str
  policies:
    description:
      - Default policies of the filter table's built-in chains. Unset means "leave the policy alone" (the default).
      - Setting V(DROP) without a rollback timer risks a lockout; the module refuses when the current SSH connection
        would no longer be accepted (see O(lockout_guard)).
    type: dict
    suboptions:
      input:
        description: Policy of INPUT.
        type: str
        choices: [ACCEPT, DROP]
      forward:
        description: Policy of FORWARD.
        type: str
        choices: [ACCEPT, DROP]
      output:
        description: Policy of OUTPUT.
        type: str
        choices: [ACCEPT, DROP]
  lockout_guard:
    description:
      - Refuse, before anything changes, rules under which the SSH session the module runs in would be cut. The
        guard evaluates the filter table as it will be after the apply (other software's rules, the owned chains,
        the resulting INPUT and OUTPUT policies) for the session's replies (OUTPUT), its packets and a new connection
        from the controller (INPUT).
      - The session is read from C(SSH_CONNECTION), or from the nearest parent process that still has it when
        C(sudo) or C(su) removed it from the module's environment.
      - Also applies to O(state=absent).
    type: bool
    default: true
  rollback_timeout:
    description:
      - Seconds after which the previous owned rules are restored unless confirmed with O(confirm=true). V(0) disables
        the timer. Only started when the rules change.
    type: int
    default: 0
  rollback_method:
    description:
      - How the timer runs. V(systemd) uses C(systemd-run) (only correct in the host's own network namespace),
        V(fork) a detached C(setsid) helper, V(auto) picks C(systemd) when PID 1 is systemd and the module runs in
        PID 1's network namespace, else C(fork).
    type: str
    choices: [auto, systemd, fork]
    default: auto
  confirm:
    description:
      - Cancel a pending rollback (the one named by O(rollback_token), or every pending one). The rest of the call
        behaves as usual, so the same model can be passed again; pending persistence is written now.
      - Fails when the timer already fired.
    type: bool
    default: false
  rollback_token:
    description: Token returned as RV(rollback_token) by the call that started the timer.
    type: str
  state_dir:
    description: Directory for rollback state (saved previous rules, helper pid).
    type: path
    default: /run/nodeguard/conntrack
  persist:
    description:
      - Write the rules files, the loader, its configuration and the systemd unit so the baseline comes back after a
        reboot. With a rollback timer, persistence waits for the confirmation call.
      - Enabling the unit is left to the caller (the C(conntrack_firewall) role does it).
    type: bool
    default: false
  rules_v4_path:
    description: IPv4 rules file (iptables-restore format, owned chains only).
    type: path
    default: /etc/nodeguard/conntrack/rules.v4
  rules_v6_path:
    description: IPv6 rules file.
    type: path
    default: /etc/nodeguard/conntrack/rules.v6
  config_path:
    description: Loader configuration (prefix, restore/save binaries and rules files per family).
    type: path
    default: /etc/nodeguard/conntrack/firewall.json
  loader_path:
    description: The loader script.
    type: path
    default: /usr/local/sbin/nodeguard-conntrack-firewall-load
  unit_path:
    description: The systemd unit file; an empty string writes no unit.
    type: path
    default: /etc/systemd/system/nodeguard-conntrack-firewall.service
seealso:
  - module: nodeguard.conntrack.iptables_audit
"""

EXAMPLES = r"""
- name: Stateful baseline, SSH from the admin network, INVALID dropped on INPUT only
  nodeguard.conntrack.iptables_baseline:
    input:
      services:
        - name: ssh
          ports: [22]
          sources: [192.0.2.0/24, 2001:db8:100::/48]
        - name: web
          ports: [80, 443]
    persist: true

- name: Apply with a rollback timer
  nodeguard.conntrack.iptables_baseline:
    input: "{{ firewall_input }}"
    rollback_timeout: 60
  register: baseline

- name: Prove the controller can still connect
  ansible.builtin.wait_for_connection:
    timeout: 30

- name: Confirm (cancels the timer)
  nodeguard.conntrack.iptables_baseline:
    input: "{{ firewall_input }}"
    confirm: true
    rollback_token: "{{ baseline.rollback_token | default(omit, true) }}"

- name: Router with port forwarding, INVALID dropped only on the uplink
  nodeguard.conntrack.iptables_baseline:
    forward:
      enabled: true
      accept_dnat: true
      invalid_drop:
        enabled: true
        in_interfaces: [eth0]
    notrack:
      - name: dns
        proto: udp
        ports: [53]

- name: Remove every trace
  nodeguard.conntrack.iptables_baseline:
    state: absent
"""

RETURN = r"""
backend:
  description: The backend written to.
  returned: always
  type: str
  sample: nft
rules:
  description: The desired owned rules per family, as iptables-restore input (what the rules files contain).
  returned: when O(state=present)
  type: dict
  sample: {"ipv4": "*filter\n:NG-CT-INPUT - [0:0]\n-A NG-CT-INPUT -i lo -j ACCEPT\n...COMMIT\n"}
changed_families:
  description: Families whose live rules were (or in check mode would be) changed.
  returned: always
  type: list
  elements: str
  sample: [ipv4]
rollback_token:
  description: Token of the rollback timer started by this call; pass it back with O(confirm=true).
  returned: always
  type: str
  sample: 3f9a0c1d2e4b5a69
rollback_method:
  description: How the rollback timer runs (V(systemd) or V(fork)), or null when none was started.
  returned: always
  type: str
  sample: fork
rollback_cancelled:
  description: Tokens of the rollback timers this call cancelled.
  returned: always
  type: list
  elements: str
  sample: [3f9a0c1d2e4b5a69]
files_changed:
  description: Persisted files written (or removed with O(state=absent)), or that would be in check mode.
  returned: always
  type: list
  elements: str
  sample: [/etc/nodeguard/conntrack/rules.v4]
persist_pending:
  description: True when persistence was postponed until the rollback timer is confirmed.
  returned: always
  type: bool
  sample: false
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError, fail_json, host_io
from ansible_collections.nodeguard.conntrack.plugins.module_utils._firewall import baseline as fw_baseline

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
        prefix=dict(type="str", default="NG-CT-"),
        families=dict(type="list", elements="str", choices=["ipv4", "ipv6"], default=["ipv4", "ipv6"]),
        backend=dict(type="str", choices=["auto", "nft", "legacy"], default="auto"),
        input=dict(type="dict", options=dict(
            enabled=dict(type="bool", default=True),
            loopback=dict(type="bool", default=True),
            icmp=dict(type="bool", default=True),
            icmp_echo=dict(type="bool", default=True),
            invalid_drop=dict(type="dict", options=_invalid_spec(False)),
            services=dict(type="list", elements="dict", options=_service_spec(False)),
            untracked_services=dict(type="list", elements="dict", options=_service_spec(False)),
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
        lockout_guard=dict(type="bool", default=True),
        rollback_timeout=dict(type="int", default=0),
        rollback_method=dict(type="str", choices=["auto", "systemd", "fork"], default="auto"),
        confirm=dict(type="bool", default=False),
        rollback_token=dict(type="str", no_log=False),
        state_dir=dict(type="path", default="/run/nodeguard/conntrack"),
        persist=dict(type="bool", default=False),
        rules_v4_path=dict(type="path", default="/etc/nodeguard/conntrack/rules.v4"),
        rules_v6_path=dict(type="path", default="/etc/nodeguard/conntrack/rules.v6"),
        config_path=dict(type="path", default="/etc/nodeguard/conntrack/firewall.json"),
        loader_path=dict(type="path", default="/usr/local/sbin/nodeguard-conntrack-firewall-load"),
        unit_path=dict(type="path", default="/etc/systemd/system/nodeguard-conntrack-firewall.service"),
    )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        with host_io("host I/O"):
            result = fw_baseline.run(module, os.environ)
    except NodeguardError as exc:
        fail_json(module, exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
