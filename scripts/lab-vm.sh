#!/usr/bin/env bash
# QEMU VM lab: Debian's own kernels (nf_conntrack a loadable module), systemd as PID 1, sshd, reboots.
#   scripts/lab.sh up --vm [-n N] [-p PREFIX] [--suite bookworm|trixie|bookworm,trixie]
#   scripts/lab.sh down [-p PREFIX]          (or scripts/lab-vm.sh down ...)
#   scripts/lab.sh status [-p PREFIX]
# Images come from scripts/build-vm-image.sh (cached outside the checkout, built when missing). Each VM
# boots its own copy-on-write overlay of the image with a direct kernel boot, 1 vCPU and 1 GiB, and
# gets two NICs:
#   - control: QEMU user-mode network with restrict=on (no route out), SSH forwarded from
#     127.0.0.1:<free port> on this machine to the guest's port 22;
#   - lab network: a tap device on a bridge inside the lab's own network namespace ngct-vm-PREFIX
#     (198.18.0.(10+i)/24 in the guest). QEMU stays in the caller's namespace; only its tap lives in
#     the lab namespace (scripts/support/qemu_tap_exec.py). Nothing is added to the root namespace.
# .lab/PREFIX/ gets inventory.yml (SSH hosts, the lab's own key), ssh_config, the overlays, pidfiles
# and console logs. `up` waits until every VM answers SSH and fails with the console tail of the ones
# that did not within NODEGUARD_VM_BOOT_TIMEOUT seconds (default 420; TCG on a shared 2-core machine).
# Acceleration: KVM when a short probe shows a KVM guest boots here, else TCG (NODEGUARD_VM_ACCEL=tcg|kvm
# forces one).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${NODEGUARD_VM_CACHE:-/var/cache/nodeguard-conntrack/vm}
boot_timeout=${NODEGUARD_VM_BOOT_TIMEOUT:-420}
memory=${NODEGUARD_VM_MEMORY:-1024}

cmd=${1:-}; shift || true
n=2; prefix=ngct-lab; suites=bookworm,trixie
while [ $# -gt 0 ]; do
  case $1 in
    -n|--hosts) n=$2; shift 2 ;;
    -p|--prefix) prefix=$2; shift 2 ;;
    --suite|--suites) suites=$2; shift 2 ;;
    --vm|--network) shift ;;
    *) echo "lab.sh --vm: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ $prefix =~ ^[a-z0-9][a-z0-9-]{0,24}$ ]] || { echo "lab.sh: bad prefix $prefix" >&2; exit 2; }
if ! [[ $n =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ] || [ "$n" -gt 8 ]; then echo "lab.sh --vm: -n must be 1..8" >&2; exit 2; fi
IFS=, read -r -a suite_list <<<"$suites"
labdir=$root/.lab/$prefix
netns=ngct-vm-$prefix
# tap names are at most 15 characters and only need to be unique inside the lab namespace
ssh_opts=(-F "$labdir/ssh_config" -o BatchMode=yes -o ConnectTimeout=5)

log() { printf '[lab-vm %s] %s\n' "$prefix" "$*"; }

qemu_pid_ours() {
  # the PID in a pidfile is ours only while it is a QEMU process started for this lab directory
  local pid=$1
  [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "qemu-system-x86_64 .*$labdir/"
}

stop_vm() {
  local pidfile=$1 pid i
  pid=$(cat "$pidfile" 2>/dev/null || true)
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  qemu_pid_ours "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do qemu_pid_ours "$pid" || return 0; sleep 0.2; done
  kill -KILL "$pid" 2>/dev/null || true
}

down() {
  local f
  if [ -d "$labdir" ]; then
    for f in "$labdir"/*.pid; do [ -e "$f" ] && stop_vm "$f"; done
  fi
  ip netns del "$netns" 2>/dev/null || true
  rm -rf "$labdir"
  log "down"
}

probe_accel() {
  # KVM guests hang on some of these machines (nested virtualisation): boot the kernel alone (it
  # panics for want of a root file system) and use KVM only when that gets that far in time.
  local kernel=$1 boot_id stamp out
  case ${NODEGUARD_VM_ACCEL:-auto} in tcg|kvm) echo "${NODEGUARD_VM_ACCEL}"; return ;; esac
  [ -c /dev/kvm ] || { echo tcg; return; }
  boot_id=$(cat /proc/sys/kernel/random/boot_id)
  stamp=$cache/kvm-probe-$boot_id
  if [ -f "$stamp" ]; then cat "$stamp"; return; fi
  out=$(mktemp)
  timeout 20 qemu-system-x86_64 -accel kvm -m 256 -smp 1 -kernel "$kernel" -append "console=ttyS0 panic=-1" \
    -no-reboot -display none -monitor none -serial "file:$out" -nodefaults >/dev/null 2>&1 || true
  if grep -q -e "Unable to mount root" -e "Kernel panic" "$out"; then echo kvm >"$stamp"; else echo tcg >"$stamp"; fi
  rm -f "$out"
  # stale probes of earlier boots of this machine
  find "$cache" -maxdepth 1 -name 'kvm-probe-*' ! -name "kvm-probe-$boot_id" -delete 2>/dev/null || true
  cat "$stamp"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

console_tail() {
  local name=$1
  echo "---- console of $name (last 40 lines) ----" >&2
  tail -n 40 "$labdir/$name.console.log" 2>/dev/null | tr -d '\r' >&2 || true
  echo "---- end of console of $name ----" >&2
}

wait_ssh() {
  # every host answers SSH, or fail with the console tails of those that do not
  local deadline=$(( $(date +%s) + boot_timeout )) pending=("$@") still name pid
  while [ ${#pending[@]} -gt 0 ]; do
    still=()
    for name in "${pending[@]}"; do
      pid=$(cat "$labdir/$name.pid" 2>/dev/null || true)
      if ! { [[ $pid =~ ^[0-9]+$ ]] && qemu_pid_ours "$pid"; }; then
        echo "lab.sh --vm: QEMU of $name is not running" >&2; console_tail "$name"; return 1
      fi
      if ssh "${ssh_opts[@]}" "$name" true >/dev/null 2>&1; then
        log "$name answers SSH after $(( $(date +%s) - started )) s"
      else
        still+=("$name")
      fi
    done
    pending=("${still[@]+"${still[@]}"}")
    [ ${#pending[@]} -eq 0 ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "lab.sh --vm: no SSH answer within ${boot_timeout}s from: ${pending[*]}" >&2
      for name in "${pending[@]}"; do console_tail "$name"; done
      return 1
    fi
    sleep 2
  done
}

up() {
  down >/dev/null
  local suite imgdir accel i name port mac addr pubkey append
  declare -A images=()
  for suite in "${suite_list[@]}"; do
    scripts/build-vm-image.sh "$suite"
    images[$suite]=$(scripts/build-vm-image.sh --path "$suite")
  done
  mkdir -p "$labdir"
  echo "$suites" >"$labdir/vm-lab"
  ssh-keygen -q -t ed25519 -N '' -C "nodeguard-lab-$prefix" -f "$labdir/id_ed25519"
  pubkey=$(base64 -w0 <"$labdir/id_ed25519.pub")
  ip netns add "$netns"
  ip -n "$netns" link set lo up
  ip -n "$netns" link add br0 type bridge
  ip -n "$netns" link set br0 up
  accel=$(probe_accel "${images[${suite_list[0]}]}/vmlinuz")
  log "acceleration: $accel"
  {
    echo "---"
    echo "all:"
    echo "  vars:"
    echo "    ansible_connection: ssh"
    echo "    ansible_user: root"
    echo "    ansible_host: 127.0.0.1"
    echo "    ansible_ssh_private_key_file: $labdir/id_ed25519"
    echo "    ansible_ssh_common_args: >-"
    echo "      -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
    echo "      -o ServerAliveInterval=10 -o ServerAliveCountMax=6"
    echo "      -o ControlPath=$labdir/cp-%C"
    echo "    ansible_python_interpreter: /usr/bin/python3"
    echo "  hosts:"
  } >"$labdir/inventory.yml"
  : >"$labdir/ssh_config"
  started=$(date +%s)
  local names=()
  for i in $(seq 1 "$n"); do
    name=$prefix-$i
    suite=${suite_list[$(( (i - 1) % ${#suite_list[@]} ))]}
    imgdir=${images[$suite]}
    port=$(free_port)
    mac=$(printf '52:54:00:ab:%02x:%02x' $(( RANDOM % 255 )) "$i")
    addr=198.18.0.$((10 + i))/24
    qemu-img create -q -f qcow2 -F qcow2 -b "$imgdir/base.qcow2" "$labdir/$name.qcow2"
    append="root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.hostname=$name ngkey=$pubkey ngaddr=$addr ngmac=$mac"
    python3 scripts/support/qemu_tap_exec.py "$netns" "tap$i" br0 -- \
      qemu-system-x86_64 -name "$name" -accel "$accel" -m "$memory" -smp 1 -nodefaults \
      -kernel "$imgdir/vmlinuz" -initrd "$imgdir/initrd.img" -append "$append" \
      -drive "file=$labdir/$name.qcow2,if=virtio,format=qcow2,cache=unsafe" \
      -netdev "user,id=ctl,restrict=on,hostfwd=tcp:127.0.0.1:$port-:22" \
      -device "virtio-net-pci,netdev=ctl,mac=52:54:00:12:34:56" \
      -netdev tap,id=lab,fd=3 -device "virtio-net-pci,netdev=lab,mac=$mac" \
      -device virtio-rng-pci \
      -display none -monitor none -serial "file:$labdir/$name.console.log" \
      -daemonize -pidfile "$labdir/$name.pid"
    {
      printf '    %s:\n' "$name"
      printf '      ansible_port: %s\n' "$port"
      printf '      lab_suite: %s\n' "$suite"
      printf '      lab_address: %s\n' "${addr%/*}"
      printf '      lab_console_log: %s\n' "$labdir/$name.console.log"
    } >>"$labdir/inventory.yml"
    {
      printf 'Host %s\n  HostName 127.0.0.1\n  Port %s\n  User root\n' "$name" "$port"
      printf '  IdentityFile %s\n  IdentitiesOnly yes\n' "$labdir/id_ed25519"
      printf '  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n'
    } >>"$labdir/ssh_config"
    names+=("$name")
    log "$name: $suite, kernel $(sed -n 's/^kernel=//p' "$imgdir/ready"), ssh 127.0.0.1:$port, lab address $addr"
  done
  if ! wait_ssh "${names[@]}"; then
    if [ "${NODEGUARD_VM_KEEP:-0}" != 1 ]; then down >/dev/null; fi
    exit 1
  fi
  log "$n VMs up, inventory $labdir/inventory.yml"
}

status() {
  local f name pid
  [ -d "$labdir" ] || { log "no lab"; return 0; }
  for f in "$labdir"/*.pid; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .pid); pid=$(cat "$f")
    if qemu_pid_ours "$pid"; then echo "$name running pid $pid"; else echo "$name stopped"; fi
  done
}

case $cmd in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: lab.sh up|down|status --vm [-n N] [-p PREFIX] [--suite bookworm|trixie]" >&2; exit 2 ;;
esac
