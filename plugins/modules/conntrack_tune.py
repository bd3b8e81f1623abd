#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: conntrack_tune
short_description: Apply and persist Linux conntrack knobs in one round trip
version_added: 0.1.0
author: nodeguard.conntrack developers (@nodeguard)
description:
  - Sets a whole set of connection tracking knobs (C(net.netfilter.nf_conntrack_*)) live through C(/proc/sys)
    and persists them in a C(sysctl.d) file, in one module call.
  - Makes the values survive reboots and module loads. If conntrack is a loadable module, it is listed in
    C(modules-load.d) (C(nf_conntrack), or C(nf_conntrack_ipv4) before kernel 4.19) and a udev rule re-applies
    the C(net.netfilter) keys when the module appears, because the keys may not exist yet when
    systemd-sysctl runs. C(modprobe.d) gets C(options nf_conntrack hashsize=N) only when conntrack is
    a loadable module, never when it is built in.
  - Host-scope knobs (V(max), V(buckets), V(expect_max)) are read-only outside the initial network namespace
    (containers). What happens then is set by O(readonly_policy); by default each such knob is reported as
    skipped, not applicable.
  - Reads every value back after writing it and fails if the kernel did not take it.
  - Warns when a later C(sysctl.d) file (or C(/etc/sysctl.conf)) sets one of the same keys to another value, since it
    overrides the persisted value at boot.
  - All input is validated before anything on the host changes.
  - The P(nodeguard.conntrack.conntrack_tuning#role) role sizes the values and calls this module.
options:
  knobs:
    description:
      - Knobs to set, by short name (V(max), V(tcp_timeout_established)) or full key
        (V(net.netfilter.nf_conntrack_max)). Only knobs on the collection's allow-list are accepted.
      - Values are non-negative integers (seconds for timeouts, 0 or 1 for switches), within what the kernel accepts
        (V(max) at most 2147483647, timeouts at most 2147483 s, INT_MAX / HZ at HZ=1000), all checked before
        anything is written. The V(helper) knob is not accepted (removed in kernel 6.0; automatic helper assignment
        is a security anti-pattern).
      - Live writes go per-namespace knobs first, then V(max), V(expect_max), and V(buckets) last.
      - V(buckets) is rounded up by the kernel to a multiple of 512; the module expects that rounding.
        Writing V(buckets) resizes the hash table live and moves the C(nf_conntrack) C(hashsize) parameter with it.
    type: dict
    default: {}
  state:
    description:
      - V(present) applies and persists O(knobs).
      - V(absent) removes the files this module manages (O(sysctl_file), O(modules_load_file),
        O(udev_rule_file), O(modprobe_file)); live values are left alone until the next reboot.
    type: str
    choices: [present, absent]
    default: present
  persist:
    description: Write the files that make the values survive reboots and module loads. With V(false) the files are not touched.
    type: bool
    default: true
  apply_live:
    description: Write the values to C(/proc/sys) now. With V(false) only the files change.
    type: bool
    default: true
  raise_only:
    description:
      - Never lower a higher live value of V(max), V(buckets) or V(expect_max) (V(max=0), unlimited, counts as
        highest). The higher value is kept live and persisted instead of the requested one.
      - Timeouts and switches are always set exactly.
    type: bool
    default: false
  readonly_policy:
    description:
      - What to do with a knob this network namespace cannot write (host-scope knobs in a container,
        read-only C(/proc/sys)) and whose live value differs.
      - V(skip) reports it as skipped (not applicable), V(warn) also emits a warning, V(fail) fails before
        anything is written.
    type: str
    choices: [skip, warn, fail]
    default: skip
  autoload:
    description:
      - Write O(modules_load_file) and O(udev_rule_file).
      - V(auto) writes them only when conntrack is a loadable module (a built-in conntrack has its keys from
        boot), V(always) writes them anyway, V(never) does not (and removes the module's own copies).
    type: str
    choices: [auto, always, never]
    default: auto
  buckets_live:
    description:
      - Resize the hash table (V(buckets)) live. A live resize rehashes every entry with all locks held and softirqs
        off, a stall proportional to the entry count; the module warns whenever it does one.
      - With V(false) a new V(buckets) value is only persisted and takes effect at the next boot (reported as skipped).
    type: bool
    default: true
    version_added: 0.2.0
  load_module:
    description: Load the conntrack module first when it is loadable but not loaded, so its keys exist to be set.
    type: bool
    default: true
  sysctl_file:
    description: The sysctl.d file this module owns.
    type: path
    default: /etc/sysctl.d/90-nodeguard-conntrack.conf
  modules_load_file:
    description: The modules-load.d file this module owns.
    type: path
    default: /etc/modules-load.d/nodeguard-conntrack.conf
  udev_rule_file:
    description: The udev rule this module owns.
    type: path
    default: /etc/udev/rules.d/90-nodeguard-conntrack.rules
  modprobe_file:
    description: The modprobe.d file this module owns.
    type: path
    default: /etc/modprobe.d/nodeguard-conntrack.conf
  mode:
    description: Mode of the files this module writes (owner and group are root).
    type: str
    default: '0644'
extends_documentation_fragment:
  - nodeguard.conntrack.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: Shows the live values and every managed file that changes, before and after.
  platform:
    platforms: linux
notes:
  - Needs root. Kernels 4.18 and later.
  - On kernels where the C(buckets) sysctl is read-only, the hash table is resized through
    C(/sys/module/nf_conntrack/parameters/hashsize) in the initial network namespace.
seealso:
  - plugin: nodeguard.conntrack.conntrack_sizing
    plugin_type: filter
    description: Turns inventory numbers into the values for O(knobs).
"""

EXAMPLES = r"""
- name: Size the table and set Kubernetes-style timeouts, persisted
  nodeguard.conntrack.conntrack_tune:
    knobs:
      max: 524288
      buckets: 131072
      net.netfilter.nf_conntrack_tcp_timeout_established: 86400
      tcp_timeout_close_wait: 3600
    raise_only: true

- name: In a container, fail instead of skipping host-scope knobs
  nodeguard.conntrack.conntrack_tune:
    knobs:
      max: 262144
      udp_timeout: 60
    readonly_policy: fail

- name: Remove the collection's files (live values stay until reboot)
  nodeguard.conntrack.conntrack_tune:
    state: absent
"""

RETURN = r"""
knobs:
  description: Outcome per knob, keyed by short name.
  returned: always
  type: dict
  sample:
    max:
      key: net.netfilter.nf_conntrack_max
      scope: host
      desired: 524288
      before: 262144
      after: 524288
      status: changed
      reason: 262144 -> 524288
      persisted: true
  contains:
    status:
      description: V(changed), V(unchanged) or V(skipped).
      type: str
    reason:
      description: Why, for example C(not applicable; host-scope knob, read-only outside the init network namespace).
      type: str
    before:
      description: Live value before (null when the key does not exist now).
      type: int
    after:
      description: Live value after (predicted in check mode).
      type: int
files:
  description: Per managed file (C(sysctl), C(modules_load), C(udev_rule), C(modprobe)) its path and action
    (V(write), V(remove), V(unchanged), V(absent), V(not_managed)).
  returned: always
  type: dict
  sample:
    sysctl:
      path: /etc/sysctl.d/90-nodeguard-conntrack.conf
      action: write
      changed: true
skipped_knobs:
  description: Short names of the knobs that were skipped (see RV(knobs) for the reasons).
  returned: always
  type: list
  elements: str
  sample: [max, buckets]
environment:
  description: What the module found, such as C(conntrack) (V(builtin), V(module), V(loadable), V(absent)),
    C(init_netns), C(kernel_release), C(module_name) and C(hashsize) before and after.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import NodeguardError, fail_json
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import tune as _tune
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import tune_host as _tune_host


def main():
    module = AnsibleModule(
        argument_spec=dict(
            knobs=dict(type="dict", default={}),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            persist=dict(type="bool", default=True),
            apply_live=dict(type="bool", default=True),
            raise_only=dict(type="bool", default=False),
            readonly_policy=dict(type="str", choices=["skip", "warn", "fail"], default="skip"),
            autoload=dict(type="str", choices=["auto", "always", "never"], default="auto"),
            buckets_live=dict(type="bool", default=True),
            load_module=dict(type="bool", default=True),
            sysctl_file=dict(type="path", default=_tune.DEFAULT_PATHS["sysctl"]),
            modules_load_file=dict(type="path", default=_tune.DEFAULT_PATHS["modules_load"]),
            udev_rule_file=dict(type="path", default=_tune.DEFAULT_PATHS["udev_rule"]),
            modprobe_file=dict(type="path", default=_tune.DEFAULT_PATHS["modprobe"]),
            mode=dict(type="str", default="0644"),
        ),
        supports_check_mode=True,
    )
    module.run_command_environ_update = {"LANG": "C", "LC_ALL": "C", "LC_MESSAGES": "C"}
    try:
        desired, policy, paths = _tune.validate_params(module.params)
        result = _tune_host.run(module, desired, policy, paths)
    except NodeguardError as exc:
        fail_json(module, exc)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
