#!/usr/bin/env bash
# A private L2 network between lab containers, without podman networks (netavark turns on the host's
# ip_forward even for --internal networks). The "switch" is a bridge inside a network namespace of
# its own; each container gets a veth into it. Nothing is added to the root namespace: no bridge,
# no address, no route, no firewall rule, no sysctl.
#   scripts/lab-net.sh create NET
#   scripts/lab-net.sh attach NET CONTAINER ADDRESS/PREFIX     (interface eth0 in the container)
#   scripts/lab-net.sh delete NET
set -euo pipefail
cmd=${1:?create|attach|delete}
net=${2:?network name}
[[ $net =~ ^[a-z0-9][a-z0-9-]{0,40}$ ]] || { echo "lab-net.sh: bad network name $net" >&2; exit 2; }
ns=ngct-sw-$net

case $cmd in
  create)
    ip netns del "$ns" 2>/dev/null || true
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$ns" link add br0 type bridge
    ip -n "$ns" link set br0 up
    ;;
  attach)
    container=${3:?container}
    address=${4:?address/prefix}
    pid=$(podman inspect --format '{{.State.Pid}}' "$container")
    [ "$pid" -gt 0 ] || { echo "lab-net.sh: $container is not running" >&2; exit 1; }
    # port name unique inside the switch namespace
    n=$(ip -n "$ns" -o link show type veth 2>/dev/null | wc -l)
    port=p$n
    ip link add "tmp-$$" netns "$ns" type veth peer name eth0 netns "$pid"
    ip -n "$ns" link set "tmp-$$" name "$port"
    ip -n "$ns" link set "$port" master br0 up
    nsenter -t "$pid" -n ip addr add "$address" dev eth0
    nsenter -t "$pid" -n ip link set eth0 up
    ;;
  delete)
    ip netns del "$ns" 2>/dev/null || true
    ;;
  *) echo "usage: lab-net.sh create|attach|delete NET [CONTAINER ADDRESS]" >&2; exit 2 ;;
esac
