#!/usr/bin/env bash
# Build a Debian VM image (distribution kernel, systemd as PID 1, sshd, python3, iptables with both
# the nft and legacy alternatives, kmod) for the QEMU lab, cached OUTSIDE the checkout and keyed on
# this recipe's hash, so a fresh clone on the same machine reuses it and a changed recipe rebuilds it.
#   scripts/build-vm-image.sh <suite>          bookworm (Debian 12, kernel 6.1) | trixie (Debian 13, 6.12)
#   scripts/build-vm-image.sh --path <suite>   print the image directory (exit 1 when not built)
# The image directory holds base.qcow2 (root file system, ext4, no partition table), vmlinuz and
# initrd.img for a direct kernel boot, and ready (the kernel and Python versions). Nothing in the image
# loads nf_conntrack at boot (as on a fresh distribution install). Per-VM settings come from the
# kernel command line at every boot (nodeguard-lab.service): the root SSH key (ngkey=), the address of
# the optional lab-network NIC (ngaddr=) and the hostname (systemd.hostname=). The control NIC
# (QEMU user-mode network, 10.0.2.15/24) is configured statically by the same unit.
set -euo pipefail
cd "$(dirname "$0")/.."
print_path=0
if [ "${1:-}" = --path ]; then print_path=1; shift; fi
suite=${1:?suite (bookworm|trixie)}
case $suite in bookworm|trixie) ;; *) echo "build-vm-image.sh: unknown suite $suite" >&2; exit 2 ;; esac
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${NODEGUARD_VM_CACHE:-/var/cache/nodeguard-conntrack/vm}
packages=linux-image-amd64,systemd-sysv,udev,dbus,openssh-server,python3,iptables,nftables,kmod,iproute2,procps,conntrack
# packages kept as .deb files in the image (installed only by the tests that need them)
extra_debs=(netfilter-persistent iptables-persistent)
# the recipe is this file: any change to it makes a new image directory
recipe=$(sha256sum <"$0" | cut -c1-12)
dest=$cache/$suite-$recipe

if [ "$print_path" = 1 ]; then
  [ -f "$dest/ready" ] || { echo "build-vm-image.sh: no $suite image for recipe $recipe (run scripts/build-vm-image.sh $suite)" >&2; exit 1; }
  echo "$dest"; exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.lock-$suite"
flock 9
if [ -f "$dest/ready" ]; then echo "vm image $suite: cached ($dest)"; exit 0; fi

cleanup() {
  # debootstrap mounts proc/sys inside the tree while it configures packages: unmount before removing
  local dir=$1 m
  for m in $(findmnt -rn -o TARGET | grep -F "$dir/" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$dir"
}
# a build of this suite interrupted earlier (we hold the suite's lock, so none is running)
for stale in "$cache/.build-$suite".*; do [ -d "$stale" ] && cleanup "$stale"; done
start=$(date +%s)
work=$(mktemp -d "$cache/.build-$suite.XXXXXX")
trap 'cleanup "$work"' EXIT
rootfs=$work/rootfs
echo "vm image $suite: debootstrap (one or two minutes)"
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2; exit 1; }

# .deb files for the netfilter-persistent proof, fetched inside the image's own apt (its suite)
mkdir -p "$rootfs/opt/nodeguard/debs"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
chroot "$rootfs" sh -c "cd /opt/nodeguard/debs && apt-get -qq update && apt-get -qq download ${extra_debs[*]}" \
  >"$work/download.log" 2>&1 || { tail -n 20 "$work/download.log" >&2; exit 1; }

# a small initramfs (only what a virtio disk with ext4 needs) instead of Debian's MODULES=most: it decompresses
# and probes far faster under TCG emulation
printf 'virtio_pci\nvirtio_blk\next4\n' >"$rootfs/etc/initramfs-tools/modules"
echo "MODULES=list" >"$rootfs/etc/initramfs-tools/conf.d/nodeguard-vm.conf"
chroot "$rootfs" update-initramfs -u -k all >"$work/initramfs.log" 2>&1 || { tail -n 20 "$work/initramfs.log" >&2; exit 1; }

echo "nodeguard-vm" >"$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
echo "/dev/vda / ext4 defaults,errors=remount-ro 0 1" >"$rootfs/etc/fstab"
: >"$rootfs/etc/resolv.conf"
install -d -m 0700 "$rootfs/root/.ssh"
cat >"$rootfs/etc/ssh/sshd_config.d/nodeguard-lab.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF

cat >"$rootfs/usr/local/sbin/nodeguard-lab-setup" <<'EOF'
#!/bin/sh
# Per-boot lab settings from the kernel command line (written by scripts/lab.sh); loads no module.
set -u
key= addr= mac=
for w in $(cat /proc/cmdline); do
  case $w in
    ngkey=*) key=${w#ngkey=} ;;
    ngaddr=*) addr=${w#ngaddr=} ;;
    ngmac=*) mac=${w#ngmac=} ;;
  esac
done
if [ -n "$key" ]; then
  umask 077
  mkdir -p /root/.ssh
  echo "$key" | base64 -d >/root/.ssh/authorized_keys
fi
ip link set lo up
# the control NIC is the one QEMU's user-mode network serves (52:54:00:12:34:56 unless told otherwise)
ifname_of() {
  for d in /sys/class/net/*; do
    [ "$(cat "$d/address" 2>/dev/null)" = "$1" ] && { basename "$d"; return 0; }
  done
  return 1
}
i=0
until ctl=$(ifname_of 52:54:00:12:34:56); do
  i=$((i + 1)); [ $i -gt 100 ] && { echo "nodeguard-lab-setup: no control NIC" >&2; exit 1; }
  sleep 0.1
done
ip addr replace 10.0.2.15/24 dev "$ctl"
ip link set "$ctl" up
if [ -n "$addr" ] && [ -n "$mac" ]; then
  i=0
  until lab=$(ifname_of "$mac"); do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "nodeguard-lab-setup: no lab NIC $mac" >&2; exit 1; }
    sleep 0.1
  done
  ip addr replace "$addr" dev "$lab"
  ip link set "$lab" up
fi
EOF
chmod 0755 "$rootfs/usr/local/sbin/nodeguard-lab-setup"
cat >"$rootfs/etc/systemd/system/nodeguard-lab.service" <<'EOF'
[Unit]
Description=nodeguard lab: SSH key and addresses from the kernel command line
Before=ssh.service network.target
Wants=network.target
After=systemd-udev-settle.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/nodeguard-lab-setup
RemainAfterExit=yes

[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/nodeguard-lab.service "$rootfs/etc/systemd/system/multi-user.target.wants/nodeguard-lab.service"
# quiet, fast boots: no periodic jobs competing for the emulated CPU
for u in apt-daily.timer apt-daily-upgrade.timer man-db.timer e2scrub_all.timer e2scrub_reap.service \
         fstrim.timer systemd-tmpfiles-clean.timer; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$u"
done
ln -sf /lib/systemd/system/multi-user.target "$rootfs/etc/systemd/system/default.target"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*

kver=$(find "$rootfs/boot" -maxdepth 1 -name 'vmlinuz-*' -printf '%f\n' | sort -V | tail -n1); kver=${kver#vmlinuz-}
pyver=$(chroot "$rootfs" python3 -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
install -m 0644 "$rootfs/boot/vmlinuz-$kver" "$work/vmlinuz"
install -m 0644 "$rootfs/boot/initrd.img-$kver" "$work/initrd.img"
mkfs.ext4 -q -F -d "$rootfs" -L root "$work/disk.raw" 3G >/dev/null
qemu-img convert -O qcow2 "$work/disk.raw" "$work/base.qcow2"
rm -f "$work/disk.raw"; rm -rf "$rootfs"
printf 'suite=%s\nkernel=%s\npython=%s\nrecipe=%s\nbuilt_seconds=%s\n' \
  "$suite" "$kver" "$pyver" "$recipe" "$(( $(date +%s) - start ))" >"$work/ready.tmp"
mv "$work/ready.tmp" "$work/ready"
mv "$work" "$dest"
trap - EXIT
# drop images of ours for this suite built from other recipes (only our own directories)
for old in "$cache/$suite"-*; do
  [ "$old" = "$dest" ] || [ ! -d "$old" ] || rm -rf "$old"
done
echo "vm image $suite: built in $(( $(date +%s) - start )) s ($dest: kernel $kver, python $pyver)"
