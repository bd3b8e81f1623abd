"""Helpers for the conntrack_tune kernel tests: run the module in the init netns, read knobs, file paths."""
import os
import shlex

from netns_lab import HASHSIZE_PARAM, NETFILTER_SYSCTL_DIR, run_module


def run_module_here(module, args, check_mode=False, diff=False):
    """Run plugins/modules/<module>.py for real in this (init) network namespace; return its JSON."""
    return run_module(module, args, check_mode=check_mode, diff=diff)


def knob(short):
    with open(os.path.join(NETFILTER_SYSCTL_DIR, "nf_conntrack_" + short)) as handle:
        return int(handle.read())


def set_knob(short, value):
    with open(os.path.join(NETFILTER_SYSCTL_DIR, "nf_conntrack_" + short), "w") as handle:
        handle.write(str(value))


def hashsize():
    with open(HASHSIZE_PARAM) as handle:
        return int(handle.read())


def file_args(directory):
    """The module's four managed files, inside a temporary directory (never the real /etc)."""
    return {
        "sysctl_file": os.path.join(str(directory), "sysctl.d", "90-nodeguard-conntrack.conf"),
        "modules_load_file": os.path.join(str(directory), "modules-load.d", "nodeguard-conntrack.conf"),
        "udev_rule_file": os.path.join(str(directory), "rules.d", "90-nodeguard-conntrack.rules"),
        "modprobe_file": os.path.join(str(directory), "modprobe.d", "nodeguard-conntrack.conf"),
    }


def udev_run_argv(rule_path):
    """The argv of the RUN+= command of the module's udev rule, as udev would run it."""
    with open(rule_path) as handle:
        lines = [line for line in handle if line.startswith("ACTION==")]
    assert len(lines) == 1, lines
    run = lines[0].split('RUN+="', 1)[1].rsplit('"', 1)[0]
    return shlex.split(run)


def conntrack_is_loadable_module():
    return os.path.exists("/sys/module/nf_conntrack/initstate")
