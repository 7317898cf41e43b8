"""Stand-in for pip's get-pip.py bootstrap script, for `ansible-test sanity`.

ansible-test bootstraps pip into each sanity venv with a get-pip.py it downloads
from ansible's own file server, which this machine cannot reach. This does the same
job with what Python ships: ensurepip (in a child process: it hides pip's configuration
from the process that runs it), then pip from PyPI with the arguments
ansible-test passes (get-pip's own --no-setuptools/--no-wheel are honoured by leaving
those packages out). `make test-fleet` copies this file where
ansible-test looks for a cached bootstrap script.
"""

import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
# in a child: ensurepip points PIP_CONFIG_FILE at /dev/null in its own environment
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
