"""The execution environment's build context (scripts/ee-context.sh: `ansible-builder create` on
extensions/ee/execution-environment.yml) installs the collection from the tarball built from this tree, with no
Galaxy server: the Containerfile's galaxy stage is replayed here, in a network namespace that has no route anywhere.

The image itself is not built: the base image's registry (quay.io) is unreachable from this machine.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile

import yaml

from netns_lab import REPO_ROOT

BIN = os.path.dirname(sys.executable)


def _context(tmp_path):
    context = tmp_path / "context"
    proc = subprocess.run([os.path.join(REPO_ROOT, "scripts", "ee-context.sh"), str(context)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600, check=False,
                          env=dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", "")))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return context


def test_context_installs_the_collection_from_the_tarball_offline(lab, tmp_path):
    context = _context(tmp_path)
    containerfile = (context / "Containerfile").read_text()
    assert 'ARG ANSIBLE_GALAXY_CLI_COLLECTION_OPTS="--offline"' in containerfile
    galaxy = re.findall(r"^RUN .*ansible-galaxy collection install .*$", containerfile, re.M)
    assert galaxy == ['RUN ANSIBLE_GALAXY_DISABLE_GPG_VERIFY=1 ansible-galaxy collection install '
                      '$ANSIBLE_GALAXY_CLI_COLLECTION_OPTS -r requirements.yml --collections-path "/usr/share/ansible/collections"']
    assert "COPY _build /build\nWORKDIR /build" in containerfile

    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert requirements == {"collections": [{"name": "collections/nodeguard-conntrack.tar.gz", "type": "file"}]}

    # the tarball is this tree's collection, with what this change added
    tarball = context / "_build" / "collections" / "nodeguard-conntrack.tar.gz"
    with tarfile.open(str(tarball)) as archive:
        names = set(archive.getnames())
        manifest = json.load(archive.extractfile("MANIFEST.json"))
    galaxy_yml = yaml.safe_load(open(os.path.join(REPO_ROOT, "galaxy.yml")))
    assert (manifest["collection_info"]["namespace"], manifest["collection_info"]["name"],
            manifest["collection_info"]["version"]) == ("nodeguard", "conntrack", galaxy_yml["version"])
    assert {"plugins/modules/conntrack_audit_collect.py", "plugins/action/conntrack_audit_state.py",
            "roles/conntrack_audit/tasks/collect.yml", "playbooks/audit.yml"} <= names
    assert not [n for n in names if n.startswith(("tests/kernel/legacy/", ".venv", ".build", "bench/"))]

    # the galaxy stage, as the Containerfile runs it (cwd /build = _build), in a namespace without a route
    build = tmp_path / "build"
    shutil.copytree(str(context / "_build"), str(build))
    offline = lab.add("ee", conntrack_rule=False)
    routes = offline.run(["ip", "route", "show", "table", "all"]).stdout
    assert "default" not in routes
    target = tmp_path / "usr-share-ansible"
    env = {"PATH": BIN + ":/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "ANSIBLE_GALAXY_DISABLE_GPG_VERIFY": "1"}
    for argv in (["ansible-galaxy", "role", "install", "-r", "requirements.yml", "--roles-path", str(target / "roles")],
                 ["ansible-galaxy", "collection", "install", "--offline", "-r", "requirements.yml",
                  "--collections-path", str(target / "collections")]):
        proc = subprocess.run(offline.argv([os.path.join(BIN, argv[0])] + argv[1:]), cwd=str(build), env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, (argv, proc.stdout[-2000:], proc.stderr[-2000:])
    installed = target / "collections" / "ansible_collections" / "nodeguard" / "conntrack"
    assert json.loads((installed / "MANIFEST.json").read_text())["collection_info"]["version"] == galaxy_yml["version"]
    doc = subprocess.run([os.path.join(BIN, "ansible-doc"), "-t", "module", "nodeguard.conntrack.conntrack_audit_collect"],
                         env=dict(env, ANSIBLE_COLLECTIONS_PATH=str(target / "collections"),
                                  ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false"),
                         capture_output=True, text=True, timeout=120, check=False)
    assert doc.returncode == 0 and "one module run" in doc.stdout, doc.stderr[-2000:]
