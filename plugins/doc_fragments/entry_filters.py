# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


class ModuleDocFragment(object):
    """The entry filter options shared by conntrack_info and conntrack_flush (one filter model)."""

    DOCUMENTATION = r"""
options:
  family:
    description:
      - Address family of the entries to read.
    type: str
    choices: [ipv4, ipv6, both]
    default: both
  proto:
    description:
      - Layer 4 protocol, by name (V(tcp), V(udp), V(icmp), V(icmpv6), V(sctp), V(gre), V(udplite), V(dccp),
        V(igmp)) or number.
    type: str
  orig_src:
    description:
      - Source address of the original direction (the client), as addresses or CIDRs; an entry matches any of them.
    type: list
    elements: str
  orig_dst:
    description:
      - Destination address of the original direction (what the client connected to, before DNAT).
    type: list
    elements: str
  reply_src:
    description:
      - Source address of the reply direction. After DNAT this is the real backend.
    type: list
    elements: str
  reply_dst:
    description:
      - Destination address of the reply direction. After SNAT this is the translated source address.
    type: list
    elements: str
  orig_sport:
    description:
      - Source port of the original direction (protocols with ports only).
    type: int
  orig_dport:
    description:
      - Destination port of the original direction.
    type: int
  reply_sport:
    description:
      - Source port of the reply direction (the backend port after DNAT).
    type: int
  reply_dport:
    description:
      - Destination port of the reply direction.
    type: int
  state:
    description:
      - TCP states; an entry matches any of them. Implies O(proto=tcp).
      - One of V(NONE), V(SYN_SENT), V(SYN_RECV), V(ESTABLISHED), V(FIN_WAIT), V(CLOSE_WAIT), V(LAST_ACK),
        V(TIME_WAIT), V(CLOSE), V(SYN_SENT2) (case-insensitive).
    type: list
    elements: str
  status:
    description:
      - Status flags that must all be set; prefix a flag with V(!) to require it clear.
      - V(expected), V(seen_reply), V(assured), V(confirmed), V(snat), V(dnat), V(seq_adjust), V(snat_done),
        V(dnat_done), V(dying), V(fixed_timeout), V(template), V(nat_clash), V(helper), V(offload), V(hw_offload),
        and V(unreplied) (the same as V(!seen_reply)).
    type: list
    elements: str
  mark:
    description:
      - Connection mark. With O(mark_mask), the entry's mark AND the mask must equal O(mark) AND the mask.
    type: int
  mark_mask:
    description:
      - Mask applied to the connection mark before comparing with O(mark). Needs O(mark).
    type: int
  zone:
    description:
      - Conntrack zone (0 is the default zone).
    type: int
  kernel_filter:
    description:
      - Ask the kernel to filter what it can before sending entries. The result is the same either way;
        V(false) only exists to compare or to work around a kernel bug.
    type: bool
    default: true
"""
