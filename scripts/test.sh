#!/usr/bin/env bash
# Install everything the tests need into .venv (torch pinned to the CPU build through
# constraints.txt) and run the whole suite.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[all,test]"
exec .venv/bin/python -m pytest -q "$@"
