#!/usr/bin/env bash
# Build a Debian lab image with debootstrap and import it into podman (cached: skipped when present).
# usage: scripts/build-lab-image.sh <suite> <image-name>     e.g. bookworm localhost/nodeguard-debian12
set -euo pipefail
suite=${1:?suite (bookworm|trixie)}
image=${2:?image name}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=python3,iptables,nftables,conntrack,iproute2,procps,kmod,udev,systemd
# the image is rebuilt when this recipe changes (its hash is stored as an image label)
# (bump RECIPE_VERSION when the steps below change what ends up in the image)
RECIPE_VERSION=1
recipe=$(printf '%s\n' "$suite" "$packages" "$RECIPE_VERSION" | sha256sum | cut -c1-16)

if podman image exists "$image" \
   && [ "$(podman image inspect --format '{{index .Labels "nodeguard.recipe"}}' "$image")" = "$recipe" ]; then
  echo "lab image $image: cached"
  exit 0
fi
old=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
work=$(mktemp -d /var/tmp/nodeguard-rootfs.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "lab image $image: debootstrap $suite (a minute or two)"
debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}
# keep the image small and quiet: no apt lists, no docs
rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/usr/share/doc/* "$work"/rootfs/usr/share/man/*
tar -C "$work/rootfs" -c . | podman import --change 'CMD ["/bin/sh"]' --change "LABEL nodeguard.recipe=$recipe" - "$image" >/dev/null
# drop the superseded image of ours (only that one, by id)
if [ -n "$old" ]; then podman rmi "$old" >/dev/null 2>&1 || true; fi
echo "lab image $image: built"
