"""Start QEMU with a tap device that lives in a lab network namespace, while QEMU itself (and so its
user-mode network's SSH forward on 127.0.0.1) stays in the caller's namespace.

usage: qemu_tap_exec.py NETNS TAP BRIDGE -- qemu-system-x86_64 ... -netdev tap,id=lab,fd=3 ...

The tap is created inside /run/netns/NETNS (TUNSETIFF there), enslaved to BRIDGE and set up there,
then this process returns to its own namespace and execs QEMU with the tap on fd 3. No interface is
created in the caller's namespace. The tap disappears with the last QEMU file descriptor.
"""
import ctypes
import fcntl
import os
import struct
import subprocess
import sys

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000


def setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def main(argv):
    if len(argv) < 6 or argv[4] != "--":
        sys.stderr.write(__doc__)
        return 2
    netns, tap, bridge, cmd = argv[1], argv[2], argv[3], argv[5:]
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(os.path.join("/run/netns", netns), os.O_RDONLY)
    setns(target)
    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    subprocess.run(["ip", "link", "set", tap, "master", bridge, "up"], check=True)
    setns(own)
    os.close(own)
    os.close(target)
    if tun != 3:
        os.dup2(tun, 3)
        os.close(tun)
    os.set_inheritable(3, True)
    os.execvp(cmd[0], cmd)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
