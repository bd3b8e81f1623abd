#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: conntrack_facts
short_description: Connection tracking limits, timeouts, counters and environment as facts
version_added: 0.1.0
description:
  - Returns C(ansible_facts.conntrack) describing Linux connection tracking on the managed node, as seen from the
    network namespace the module runs in.
  - Needs only the Python standard library on the node; conntrack-tools are not used.
  - Counters come from ctnetlink over a netlink socket. Without C(CAP_NET_ADMIN) in the namespace the module falls
    back to C(/proc/net/stat/nf_conntrack), parsed by column name, sets RV(ansible_facts.conntrack.counters_source)
    to V(procfs) and says why in a warning.
  - On a kernel without connection tracking loaded the module does not fail; it returns
    RV(ansible_facts.conntrack.available=false).
  - Timeouts, settings, counters and the entry count are per network namespace. C(max), C(buckets),
    C(expect_max) and C(hashsize) are one global value that only the initial network namespace can change.
    RV(ansible_facts.conntrack.environment.readonly_knobs) says which knobs cannot be written here.
author:
  - nodeguard.conntrack contributors (@nodeguard)
options:
  gather_subset:
    description:
      - Which parts to gather, like M(ansible.builtin.setup)'s option of the same name.
      - Subsets are V(limits), V(timeouts), V(settings), V(counters), V(environment), V(events) and V(owners). V(all) means
        all of them, V(min) means V(limits). A name prefixed with V(!) is excluded; a list of only exclusions
        starts from V(all).
      - V(limits) is always gathered unless V(!min) is given.
      - V(events) reads the kernel log (C(/dev/kmsg)) and is not gathered by default.
    type: list
    elements: str
    default: ['all', '!events']
  events_window:
    description:
      - With the V(events) subset, count kernel messages from the last O(events_window) seconds.
    type: int
    default: 3600
  events_max_records:
    description:
      - With the V(events) subset, read at most this many kernel log records (oldest first), so a busy log
        cannot make the module slow. RV(ansible_facts.conntrack.events.truncated) tells when the limit was hit.
    type: int
    default: 50000
extends_documentation_fragment:
  - nodeguard.conntrack.attributes
  - nodeguard.conntrack.attributes.INFO_MODULE
  - nodeguard.conntrack.attributes.FACTS
attributes:
  platform:
    platforms: posix
notes:
  - Kernel log messages are rate-limited by the kernel, so event counts are a lower bound of table-full episodes,
    not a count of dropped packets; the C(drop) counter in RV(ansible_facts.conntrack.counters) counts those.
  - Reading C(/dev/kmsg) needs C(CAP_SYSLOG) when C(kernel.dmesg_restrict=1), and containers usually have no
    C(/dev/kmsg); RV(ansible_facts.conntrack.events.readable) is then V(false) with the reason.
seealso:
  - name: Field reference and what to do with each value
    description: docs/conntrack_facts.md in the collection.
    link: https://github.com/nodeguard/conntrack/blob/main/docs/conntrack_facts.md
"""

EXAMPLES = r"""
- name: Gather conntrack facts (everything but kernel-log events)
  nodeguard.conntrack.conntrack_facts:

- name: Only limits and counters
  nodeguard.conntrack.conntrack_facts:
    gather_subset:
      - counters

- name: Everything, including table-full messages of the last 10 minutes
  nodeguard.conntrack.conntrack_facts:
    gather_subset: [all]
    events_window: 600

- name: Warn when the table is more than 75 % full
  ansible.builtin.debug:
    msg: "conntrack table {{ ansible_facts.conntrack.limits.usage_pct }} % full"
  when:
    - ansible_facts.conntrack.available
    - ansible_facts.conntrack.limits.usage_pct is not none
    - ansible_facts.conntrack.limits.usage_pct > 75
"""

RETURN = r"""
ansible_facts:
  description: Facts to add to C(ansible_facts).
  returned: always
  type: complex
  contains:
    conntrack:
      description: Connection tracking facts of the network namespace the module ran in.
      returned: always
      type: complex
      contains:
        available:
          description: Whether connection tracking is loaded in the running kernel.
          returned: always
          type: bool
          sample: true
        gather_subset:
          description: The subsets that were gathered, after resolving V(all), V(min) and exclusions.
          returned: always
          type: list
          elements: str
          sample: [counters, environment, limits, settings, timeouts]
        notes:
          description: Why something could not be read the preferred way (procfs fallback, unreadable kernel log).
          returned: always
          type: list
          elements: str
          sample: []
        limits:
          description:
            - Table size and fill. V(null) for a value that cannot be read here.
            - C(max), C(buckets), C(expect_max) and C(hashsize) are global; C(count) is this namespace's.
          returned: when the limits subset is gathered (always unless V(!min))
          type: dict
          sample: {max: 262144, count: 1843, usage_pct: 0.7, buckets: 262144, hashsize: 262144, expect_max: 4096}
          contains:
            max:
              description: C(nf_conntrack_max), the most entries each network namespace may hold (V(0) means no limit).
              type: int
            count:
              description: Entries in this network namespace now.
              type: int
            usage_pct:
              description: C(count) / C(max) in percent, two decimals; V(null) when C(max) is V(0) or unknown.
              type: float
            buckets:
              description: Hash table buckets (C(nf_conntrack_buckets)).
              type: int
            hashsize:
              description: The C(nf_conntrack) module parameter C(hashsize) (same table as C(buckets)); V(null) when not readable.
              type: int
            expect_max:
              description: Size limit of the expectation table (C(nf_conntrack_expect_max)).
              type: int
        timeouts:
          description: Every C(nf_conntrack_*timeout*) sysctl present, in seconds, keyed by name without the C(nf_conntrack_) prefix.
          returned: when the timeouts subset is gathered
          type: dict
          sample: {tcp_timeout_established: 432000, udp_timeout: 30, udp_timeout_stream: 120}
        settings:
          description: The other per-namespace conntrack sysctls (C(tcp_be_liberal), C(tcp_loose), C(acct), C(events), ...).
          returned: when the settings subset is gathered
          type: dict
          sample: {tcp_be_liberal: 0, tcp_loose: 1, tcp_max_retrans: 3, acct: 0, checksum: 1, log_invalid: 0}
        counters:
          description:
            - The per-CPU statistics summed over CPUs, for this network namespace, since the namespace was created.
            - Keys are C(found), C(invalid), C(insert), C(insert_failed), C(drop), C(early_drop), C(error),
              C(search_restart), C(clash_resolve), C(chaintoolong). A counter this kernel does not report is V(null).
            - V(null) when conntrack is not available or no source could be read.
          returned: when the counters subset is gathered
          type: dict
          sample: {found: 0, invalid: 12, insert: 0, insert_failed: 0, drop: 0, early_drop: 0, error: 3,
                   search_restart: 5, clash_resolve: 0, chaintoolong: 0}
        counters_per_cpu:
          description: One dict per possible CPU with C(cpu) and the ten counter names.
          returned: when the counters subset is gathered
          type: list
          elements: dict
        counters_source:
          description: Where the counters came from, V(netlink) or V(procfs); V(null) when nowhere.
          returned: when the counters subset is gathered
          type: str
          sample: netlink
        environment:
          description: Where conntrack runs and what can be changed here.
          returned: when the environment subset is gathered
          type: dict
          contains:
            kernel_release:
              description: C(uname -r).
              type: str
              sample: 6.1.0-27-amd64
            memtotal_mb:
              description:
                - Total memory of the machine in MiB (C(MemTotal) of C(/proc/meminfo)); V(null) when unreadable.
                - The input the P(nodeguard.conntrack.conntrack_sizing#filter) filter takes as O(nodeguard.conntrack.conntrack_sizing#filter:memory_mb).
              type: int
              sample: 16012
            cpus:
              description: Number of CPUs of the machine (C(os.cpu_count())), the per-CPU sizing input.
              type: int
              sample: 8
            conntrack:
              description: >-
                V(builtin), V(module) (loaded), V(loadable) (a module on disk, not loaded) or V(absent)
                (neither in the running kernel nor in its module list). Same answer as M(nodeguard.conntrack.conntrack_tune).
              type: str
            module_config:
              description:
                - How this host is configured to load C(nf_conntrack), read as C(systemd-modules-load) and kmod read it
                  (C(*.conf) in C(/etc), C(/run), C(/usr/local/lib), C(/usr/lib) and C(/lib), an C(/etc) file hiding a
                  same-named one) plus the kernel command line.
                - C(load_at_boot) lists the modules-load.d files (or C(/proc/cmdline)) that load it at boot, C(owned) when
                  M(nodeguard.conntrack.conntrack_tune) wrote the file. C(options) maps each module parameter
                  (C(hashsize), ...) to its C(value), the modprobe.d C(path) that sets it and C(owned).
                - C(blacklisted) lists the files with C(blacklist nf_conntrack); that stops alias loads only, a firewall
                  rule or an explicit C(modprobe) still loads it. C(install) is the first C(install nf_conntrack) command
                  and its file. C(blocked) says why the module cannot load (an install command that does not run
                  modprobe, C(module_blacklist=) on the kernel command line), V(null) otherwise.
              type: dict
              sample: {"load_at_boot": [{"path": "/etc/modules-load.d/nodeguard-conntrack.conf", "owned": true}],
                       "options": {"hashsize": {"value": "65536", "path": "/etc/modprobe.d/nodeguard-conntrack.conf", "owned": true}},
                       "blacklisted": [], "install": null, "blocked": null,
                       "cmdline": {"modules_load": false, "blocked": false, "blacklisted": false}}
            init_netns:
              description: Whether this is the initial network namespace; V(null) when it cannot be determined.
              type: bool
            init_netns_reason:
              description: The evidence for C(init_netns).
              type: str
            netns_inode:
              description: Inode of this network namespace (what the kernel prints in C(table full in netns N)).
              type: int
            container:
              description: Container manager detected (V(podman), V(docker), V(lxc), ...), or V(null).
              type: str
            container_evidence:
              description: File that revealed the container, or V(null).
              type: str
            writable_knobs:
              description: Catalogue knobs (and C(hashsize)) this process can write here.
              type: list
              elements: str
            readonly_knobs:
              description: Knobs present but not writable here (always C(count); C(max), C(buckets), C(expect_max)
                outside the initial network namespace; everything under a read-only C(/proc/sys)).
              type: list
              elements: str
            iptables_backend:
              description: V(nft) or V(legacy) as the C(iptables) command is installed, V(null) when no iptables.
              type: str
            iptables_legacy_tables:
              description: Tables the legacy (x_tables) backend has loaded in this namespace; non-empty together
                with V(nft) means both backends may hold rules.
              type: list
              elements: str
            nft_tables:
              description:
                - Every nf_tables table in this namespace (from C(nft -j list ruleset)), in nft's order; V(null) when
                  nft is missing or cannot list the rule set (RV(ansible_facts.conntrack.environment.nft_tables_reason)).
                - Each has C(family), C(name), C(owner) (V(iptables-nft), V(ebtables-nft), V(arptables-nft),
                  V(firewalld), V(docker), V(kube-proxy), V(libvirt), V(incus), V(lxd), V(netavark),
                  V(nodeguard.conntrack), V(nftables.conf) when declared in C(/etc/nftables.conf), V(unknown)),
                  C(iptables_view) (whether C(iptables-save) shows it), C(flags), C(base_chains) (name, type, hook,
                  priority, policy), C(chains) and C(rules) (counts).
                - A table with C(iptables_view=false) holds rules only an nftables audit reads
                  (M(nodeguard.conntrack.nftables_audit)).
              type: list
              elements: dict
              version_added: 0.2.0
            nft_tables_reason:
              description: Why RV(ansible_facts.conntrack.environment.nft_tables) is V(null), else V(null).
              type: str
              version_added: 0.2.0
            nft_native_tables:
              description: Number of nf_tables tables the iptables view does not cover; V(null) when not read.
              type: int
              version_added: 0.2.0
            nftables_conf:
              description: What C(/etc/nftables.conf) declares (C(tables), C(flush_ruleset), C(includes)); V(null)
                when the file does not exist. C(flush_ruleset=true) means loading it deletes every other tool's table.
              type: dict
              version_added: 0.2.0
        owners:
          description:
            - Per conntrack knob that a sysctl file sets or kube-proxy writes (short name), who owns it and whether the
              live value drifted from the persisted one.
            - C(live) value, C(persisted) (what the last sysctl file read at boot sets, C(persisted_by) that file),
              C(ours) (the collection's own sysctl file sets it), C(drift) (live differs from persisted) and
              C(writers), the other writers seen (C(kind) V(sysctl_file) with C(path) and C(value), V(kube-proxy)
              with C(pid) and C(detail), V(runtime) with C(pid) and C(name)).
            - Processes are read from C(/proc), so a kube-proxy of the host is seen from every network namespace.
          returned: when the owners subset is gathered
          type: dict
          version_added: 0.2.0
        events:
          description: Conntrack kernel messages within O(events_window) seconds.
          returned: when the events subset is gathered
          type: dict
          contains:
            readable:
              description: Whether C(/dev/kmsg) could be read; when V(false) the other counts are absent.
              type: bool
            reason:
              description: Why the kernel log could not be read.
              type: str
            window_seconds:
              description: The window used.
              type: int
            records_read:
              description: Kernel log records read.
              type: int
            truncated:
              description: Whether O(events_max_records) (or the byte bound) stopped the read early.
              type: bool
            table_full:
              description: C(table full, dropping packet) kernel messages from any namespace.
              type: int
            table_full_this_netns:
              description: Those naming this namespace (or, in the initial namespace, naming none).
              type: int
            table_full_by_netns:
              description: Count per namespace inode (V(init) for messages without one).
              type: dict
            expectation_table_full:
              description: C(expectation table full) kernel messages.
              type: int
            last_table_full_seconds_ago:
              description: Age of the newest table-full message, or V(null).
              type: float
            last_expectation_table_full_seconds_ago:
              description: Age of the newest expectation-table-full message, or V(null).
              type: float
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError, NodeguardError, fail_json
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import facts as _ct_facts


def main():
    module = AnsibleModule(
        argument_spec=dict(
            gather_subset=dict(type="list", elements="str", default=list(_ct_facts.DEFAULT_GATHER_SUBSET)),
            events_window=dict(type="int", default=3600),
            events_max_records=dict(type="int", default=50000),
        ),
        supports_check_mode=True,
    )
    params = module.params

    def iptables_version(binary):
        rc, out, err = module.run_command([binary, "-V"], environ_update={"LANG": "C", "LC_ALL": "C"})
        return out if rc == 0 else None

    def nft_list():
        nft = module.get_bin_path("nft", required=False)
        if not nft:
            return None, "nft not found"
        rc, out, err = module.run_command([nft, "-j", "list", "ruleset"], environ_update={"LANG": "C", "LC_ALL": "C"})
        if rc != 0:
            return None, "nft -j list ruleset failed (rc=%d): %s" % (rc, err.strip())
        return out, None

    try:
        subsets = _ct_facts.resolve_subsets(params["gather_subset"])
        for name in ("events_window", "events_max_records"):
            if params[name] <= 0:
                raise InputError(name, "must be a positive integer, got %d" % params[name])
        facts, warnings = _ct_facts.gather(subsets, events_window=params["events_window"],
                                           events_max_records=params["events_max_records"],
                                           run_iptables_version=iptables_version, run_nft_list=nft_list)
    except NodeguardError as exc:
        fail_json(module, exc)
    for warning in warnings:
        module.warn(warning)
    module.exit_json(changed=False, ansible_facts={"conntrack": facts})


if __name__ == "__main__":
    main()
