#!/usr/bin/env bash
# The test suite: sets up .venv (see env.sh), then runs pytest.  Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
exec python -m pytest -q "$@"
