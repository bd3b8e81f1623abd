#!/usr/bin/env bash
# Managed-node smoke on an old Python (the oldest the ansible-core in use runs modules on): the conntrack_facts
# integration target (facts, a second run that agrees, conntrack_tune in check mode) as a playbook on localhost
# whose ansible_python_interpreter is the given Python, in a network namespace created for the run.
# usage: scripts/smoke-oldest-python.sh CONTROLLER_VENV PYTHON X.Y
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(readlink -f "$1"); py=$2; want=$3
[ "$(id -u)" -eq 0 ] || { echo "smoke-oldest-python: needs root (a network namespace)" >&2; exit 1; }
mkdir -p .build/collections/ansible_collections/nodeguard
ln -sfn ../../../.. .build/collections/ansible_collections/nodeguard/conntrack
work=$(mktemp -d)
ns=ngct-py38-$$
ip netns add "$ns"
trap 'ip netns delete "$ns" 2>/dev/null || true; rm -rf "$work"' EXIT
ip -n "$ns" link set lo up
cat >"$work/smoke.yml" <<'YAML'
- name: conntrack_facts target with the managed node's Python set to an old one
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: The interpreter in use is the oldest one
      ansible.builtin.command: "{{ ansible_python_interpreter }} -c 'import sys; print(sys.version_info[:2])'"
      changed_when: false
      register: version
    - name: It is the one asked for
      ansible.builtin.assert:
        that: version.stdout == '(' ~ (want.split('.') | join(', ')) ~ ')'
    - name: The target's tasks
      ansible.builtin.include_role:
        name: conntrack_facts
YAML
export ANSIBLE_COLLECTIONS_PATH=$PWD/.build/collections ANSIBLE_ROLES_PATH=$PWD/tests/integration/targets
"$venv/bin/ansible-playbook" --version | sed -n 1p
ip netns exec "$ns" "$venv/bin/ansible-playbook" -i localhost, -e "ansible_python_interpreter=$py" -e "want=$want" "$work/smoke.yml"
