#!/usr/bin/env bash
# Build the execution environment's context (no image): the collection tarball from this tree, then
# `ansible-builder create` on extensions/ee/execution-environment.yml.
#   scripts/ee-context.sh [CONTEXT_DIR]     (default .build/ee/context)
# Build the image from it where the base image's registry is reachable:
#   podman build -f CONTEXT_DIR/Containerfile -t nodeguard-conntrack-ee CONTEXT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PWD/.venv/bin:$PATH
context=$(realpath -m "${1:-.build/ee/context}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ansible-galaxy collection build --force --output-path "$work/dist" . >/dev/null
cp extensions/ee/execution-environment.yml "$work/"
cp "$work"/dist/nodeguard-conntrack-*.tar.gz "$work/nodeguard-conntrack.tar.gz"
rm -rf "$context"
ansible-builder create -f "$work/execution-environment.yml" -c "$context" --output-filename Containerfile >/dev/null
echo "execution environment context: $context (Containerfile, collection $(basename "$work"/dist/*.tar.gz))"
