"""Stand-in for ansible-test's get-pip bootstrap script, whose download host is unreachable here.

ansible-test creates each sanity venv without pip and runs this file with get-pip's arguments
(pip options, ``--no-setuptools``/``--no-wheel`` and the pinned packages such as ``pip==24.2``).
We bootstrap pip from the interpreter's own ``ensurepip`` and then let that pip install exactly the
requested packages from the package index, so the result is the venv get-pip would have produced.
"""
import subprocess
import sys

GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
args = [arg for arg in sys.argv[1:] if arg not in GET_PIP_ONLY]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args))
