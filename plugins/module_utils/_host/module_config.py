# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the host is configured to load nf_conntrack (private to the collection): which modules-load.d files load it
at boot, which modprobe.d files set its options, blacklist it or replace its load with an install command, and
what the kernel command line says. Facts report it; the tuning plan reads it to refuse a blocked load clearly.

``module_config`` is pure (file texts in, answer out); ``read_module_config`` reads the files the way
systemd-modules-load and kmod do: ``*.conf`` in each directory, a file name in an earlier directory hides the
same name in a later one, and the files are taken in file-name order.

What each directive does to ``modprobe nf_conntrack`` (the collection's load, and a firewall rule's
dependency load through xt_conntrack / nft_ct):
- ``blacklist nf_conntrack``: only alias loads are stopped; an explicit or dependency load still loads it.
- ``install nf_conntrack CMD``: CMD runs instead of the load; unless CMD itself runs modprobe, nothing loads
  (``/bin/false`` makes modprobe fail, ``/bin/true`` makes it succeed without loading): ``blocked``.
- ``module_blacklist=nf_conntrack`` on the kernel command line: the kernel refuses the module: ``blocked``.
- ``modprobe.blacklist=nf_conntrack``: the same as a blacklist line.
"""

import glob
import os

MODULE = "nf_conntrack"
MODULES_LOAD_DIRS = ("/etc/modules-load.d", "/run/modules-load.d", "/usr/local/lib/modules-load.d",
                     "/usr/lib/modules-load.d", "/lib/modules-load.d")
MODPROBE_DIRS = ("/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/usr/lib/modprobe.d",
                 "/lib/modprobe.d")
CMDLINE = "/proc/cmdline"
# the first line of every file conntrack_tune writes (tune.HEADER)
OWNED_MARKER = "# Managed by Ansible (nodeguard.conntrack."


def _same_module(name):
    # kmod treats '-' and '_' in module names alike
    return name.replace("-", "_") == MODULE


def effective_files(listing):
    """[(path, text)] in the order the tools read them, from {directory: {file name: text}} in directory order
    (a name in an earlier directory hides it in the later ones)."""
    chosen = {}
    for directory, files in listing:
        for name, text in files.items():
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = (os.path.join(directory, name), text)
    return [chosen[name] for name in sorted(chosen)]


def _owned(text):
    return (text or "").startswith(OWNED_MARKER)


def parse_cmdline(text):
    """{"modules_load": bool, "blocked": bool, "blacklisted": bool} from /proc/cmdline's text."""
    found = {"modules_load": False, "blocked": False, "blacklisted": False}
    for word in (text or "").split():
        key, _sep, value = word.partition("=")
        names = [name for name in value.split(",") if name]
        if not any(_same_module(name) for name in names):
            continue
        if key in ("modules-load", "rd.modules-load"):
            found["modules_load"] = True
        elif key == "module_blacklist":
            found["blocked"] = True
        elif key == "modprobe.blacklist":
            found["blacklisted"] = True
    return found


def module_config(modules_load_files, modprobe_files, cmdline_text=None):
    """What loads nf_conntrack at boot and what its modprobe configuration says.

    ``modules_load_files`` / ``modprobe_files``: [(path, text)] as ``effective_files`` returns them.

    {"load_at_boot": [{"path", "owned"}], "options": {param: {"value", "path", "owned"}},
     "blacklisted": [path], "install": {"command", "path"} or None, "blocked": reason or None,
     "cmdline": parse_cmdline's answer}
    """
    load_at_boot = []
    for path, text in modules_load_files:
        for line in (text or "").splitlines():
            line = line.strip()
            if line and line[0] not in "#;" and _same_module(line.split()[0]):
                load_at_boot.append({"path": path, "owned": _owned(text)})
                break
    options, blacklisted, install = {}, [], None
    for path, text in modprobe_files:
        # kmod joins lines ending in a backslash
        for line in (text or "").replace("\\\n", " ").splitlines():
            words = line.split()
            if not words or words[0].startswith("#") or len(words) < 2 or not _same_module(words[1]):
                continue
            if words[0] == "options":
                for word in words[2:]:
                    param, _sep, value = word.partition("=")
                    options[param] = {"value": value, "path": path, "owned": _owned(text)}
            elif words[0] == "blacklist":
                blacklisted.append(path)
            elif words[0] == "install" and install is None:
                install = {"command": " ".join(words[2:]), "path": path}
    cmdline = parse_cmdline(cmdline_text)
    if cmdline["blacklisted"]:
        blacklisted.append(CMDLINE)
    if cmdline["modules_load"]:
        load_at_boot.append({"path": CMDLINE, "owned": False})
    blocked = None
    if cmdline["blocked"]:
        blocked = "module_blacklist=%s on the kernel command line: the kernel refuses to load it" % MODULE
    elif install is not None and "modprobe" not in install["command"]:
        blocked = "%s: 'install %s %s' runs instead of loading it" % (install["path"], MODULE, install["command"])
    return {"load_at_boot": load_at_boot, "options": options, "blacklisted": blacklisted, "install": install,
            "blocked": blocked, "cmdline": cmdline}


# ---- adapter ----

def _listing(directories):
    listing = []
    for directory in directories:
        files = {}
        for path in sorted(glob.glob(os.path.join(directory, "*.conf"))):
            try:
                with open(path) as handle:
                    files[os.path.basename(path)] = handle.read()
            except (IOError, OSError, UnicodeDecodeError):
                continue
        listing.append((directory, files))
    return listing


def read_module_config():
    """module_config of this host's files and kernel command line."""
    try:
        with open(CMDLINE) as handle:
            cmdline = handle.read()
    except (IOError, OSError):
        cmdline = None
    return module_config(effective_files(_listing(MODULES_LOAD_DIRS)), effective_files(_listing(MODPROBE_DIRS)),
                         cmdline)
