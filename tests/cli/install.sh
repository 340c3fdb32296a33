#!/usr/bin/env bash
# Creates tests/cli/.venv with azure-cli (tests/cli/requirements.txt). A venv of its own: azure-cli pins its own
# azure-core and azure-mgmt-recoveryservices* versions, which differ from tests/python/requirements.txt.
# uv (from PyPI) installs azure-cli's ~150 packages in about half the time pip takes.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check uv==0.13.9
.venv/bin/uv pip install --quiet --python .venv/bin/python -r requirements.txt
