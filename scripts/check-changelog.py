"""Changelog conventions antsibull-changelog's own lint does not check (run by ``make lint`` after it).

- Every role under roles/ and every playbook under playbooks/ is announced exactly once: in an
  ``add object.role`` / ``add object.playbook`` section of a fragment or in a release of changelog.yaml.
  (antsibull-changelog finds modules and plugins itself from ``version_added``; roles without a
  ``version_added`` in their argument spec and playbooks it cannot find.)
- Every module and filter declares ``version_added`` (that is how it gets announced).
- No ``*_changes`` entry announces a new module, plugin, role or playbook (that belongs to the above).
Exit 1 with one line per problem.
"""
import glob
import os
import re
import sys

import yaml

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
NEW_THING = re.compile(r"\bnew (module|filter|plugin|lookup|test|role|playbook)s?\b", re.IGNORECASE)


def announced_objects(problems):
    seen = {"role": [], "playbook": []}
    changes = os.path.join(ROOT, "changelogs", "changelog.yaml")
    with open(changes) as fh:
        data = yaml.safe_load(fh) or {}
    for release in (data.get("releases") or {}).values():
        for kind, objs in (release.get("objects") or {}).items():
            seen.setdefault(kind, []).extend(o["name"] for o in objs)
    for path in sorted(glob.glob(os.path.join(ROOT, "changelogs", "fragments", "*.y*ml"))):
        with open(path) as fh:
            frag = yaml.safe_load(fh) or {}
        rel = os.path.relpath(path, ROOT)
        for section, entries in frag.items():
            if section.startswith("add object."):
                seen.setdefault(section.split(".", 1)[1], []).extend(e["name"] for e in entries)
            elif section.endswith("_changes"):
                for entry in entries:
                    match = NEW_THING.search(entry)
                    if match:
                        problems.append("%s: %s entry announces a %s (%r): use version_added or an 'add object.*'"
                                        " section" % (rel, section, match.group(0), entry[:60]))
    return seen


def main():
    problems = []
    seen = announced_objects(problems)
    present = {
        "role": sorted(os.path.basename(p.rstrip("/")) for p in glob.glob(os.path.join(ROOT, "roles", "*/"))),
        "playbook": sorted(os.path.splitext(os.path.basename(p))[0]
                           for p in glob.glob(os.path.join(ROOT, "playbooks", "*.yml"))),
    }
    for kind, names in present.items():
        for name in names:
            count = seen.get(kind, []).count(name)
            if count != 1:
                problems.append("%s %s is announced %d times (want 1: 'add object.%s' in a fragment, or a release)"
                                % (kind, name, count, kind))
        for name in set(seen.get(kind, [])) - set(names):
            problems.append("'add object.%s' names %s, which does not exist" % (kind, name))
    for path in sorted(glob.glob(os.path.join(ROOT, "plugins", "modules", "*.py"))
                       + glob.glob(os.path.join(ROOT, "plugins", "filter", "*.py"))):
        with open(path) as fh:
            text = fh.read()
        if "DOCUMENTATION" in text and not re.search(r"^version_added:\s*\S", text, re.MULTILINE):
            problems.append("%s: DOCUMENTATION has no top-level version_added" % os.path.relpath(path, ROOT))
    for line in problems:
        print(line)
    if problems:
        return 1
    print("changelog conventions: %d roles and %d playbooks announced once, every module/filter has version_added"
          % (len(present["role"]), len(present["playbook"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
