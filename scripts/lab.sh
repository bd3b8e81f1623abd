#!/usr/bin/env bash
# Podman lab hosts (default) or QEMU VMs (--vm) for the demo, tests, benchmarks and ad-hoc work.
#   scripts/lab.sh up [-n N] [-p PREFIX] [--network] [--images debian12,debian13]
#   scripts/lab.sh up --vm [-n N] [-p PREFIX] [--suite bookworm|trixie|bookworm,trixie]
#   scripts/lab.sh down [-p PREFIX]
#   scripts/lab.sh status [-p PREFIX]
# Each host is a podman container with its own network namespace (no route out: --network none, plus
# with --network a private switch shared by the hosts, see lab-net.sh), NET_ADMIN + NET_RAW, /proc/sys unmasked and a
# user-namespace mapping so host-wide sysctls stay read-only inside. The inventory is written to
# .lab/<PREFIX>/inventory.yml (podman connection, from the test-only containers.podman collection).
# VM mode: see scripts/lab-vm.sh (Debian's own kernels, systemd, sshd, SSH over a forwarded 127.0.0.1 port).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/.build/containers.conf}

all_args=("$@")
for a in "$@"; do [ "$a" != --vm ] || exec "$root/scripts/lab-vm.sh" "$@"; done
cmd=${1:-}; shift || true
n=3; prefix=ngct-lab; network=0; images=debian12,debian13
while [ $# -gt 0 ]; do
  case $1 in
    -n|--hosts) n=$2; shift 2 ;;
    -p|--prefix) prefix=$2; shift 2 ;;
    --network) network=1; shift ;;
    --images) images=$2; shift 2 ;;
    *) echo "lab.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $prefix =~ ^[a-z0-9][a-z0-9-]{0,30}$ ]] || { echo "lab.sh: bad prefix $prefix" >&2; exit 2; }
if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 128 ]; then echo "lab.sh: -n must be 1..128" >&2; exit 2; fi
IFS=, read -r -a image_list <<<"$images"
labdir=$root/.lab/$prefix
# a lab brought up with --vm is handled by lab-vm.sh for every later command too (down, status)
if [ -f "$labdir/vm-lab" ]; then exec "$root/scripts/lab-vm.sh" "${all_args[@]}"; fi
net_name=$prefix-net

# PID 1 that exits on SIGTERM, so a stop takes no 10 s grace period
PID1=(sh -c 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done')

down() {
  local ids
  ids=$(podman ps -aq --filter "label=nodeguard.lab=$prefix")
  if [ -n "$ids" ]; then
    # podman sometimes reports EBUSY on the shm mount while still removing the container: check after
    # shellcheck disable=SC2086
    podman rm -f -t 2 $ids >/dev/null 2>&1 || true
    ids=$(podman ps -aq --filter "label=nodeguard.lab=$prefix")
    # shellcheck disable=SC2086
    [ -z "$ids" ] || podman rm -f -t 2 $ids >/dev/null
  fi
  scripts/lab-net.sh delete "$net_name"
  rm -rf "$labdir"
  echo "lab $prefix: down"
}

up() {
  down >/dev/null
  mkdir -p "$labdir"
  if [ "$network" = 1 ]; then scripts/lab-net.sh create "$net_name"; fi
  {
    echo "---"
    echo "all:"
    echo "  vars:"
    echo "    ansible_connection: containers.podman.podman"
    echo "    ansible_user: root"
    echo "    ansible_python_interpreter: /usr/bin/python3"
    echo "  hosts:"
  } >"$labdir/inventory.yml"
  local i name image
  for i in $(seq 1 "$n"); do
    name=$prefix-$i
    image=localhost/nodeguard-${image_list[$(( (i - 1) % ${#image_list[@]} ))]}
    podman run -d --name "$name" --hostname "$name" --label "nodeguard.lab=$prefix" --network none \
      --cap-add NET_ADMIN --cap-add NET_RAW --security-opt unmask=/proc/sys \
      --uidmap 0:200000:65536 --gidmap 0:200000:65536 \
      "$image" "${PID1[@]}" >/dev/null
    printf '    %s:\n      lab_image: %s\n' "$name" "$image" >>"$labdir/inventory.yml"
    if [ "$network" = 1 ]; then
      # benchmark range, only on interfaces inside the lab's own namespaces
      scripts/lab-net.sh attach "$net_name" "$name" "198.18.0.$((10 + i))/24"
      printf '      lab_address: 198.18.0.%s\n' "$((10 + i))" >>"$labdir/inventory.yml"
    fi
  done
  echo "lab $prefix: $n hosts up, inventory $labdir/inventory.yml"
}

case $cmd in
  up) up ;;
  down) down ;;
  status) podman ps -a --filter "label=nodeguard.lab=$prefix" --format '{{.Names}} {{.Image}} {{.Status}}' ;;
  *) echo "usage: lab.sh up|down|status [-n N] [-p PREFIX] [--network] [--images a,b]" >&2; exit 2 ;;
esac
