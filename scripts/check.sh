#!/usr/bin/env bash
# The checks of the README's test command, after scripts/install.sh: formatting and lint first (snakefmt and
# `snakemake --lint`, as the Snakemake catalog's workflows gate on them; ruff for the Python), then the tests.
# Arguments go to pytest (e.g. -m "not slow" for the fast loop).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "check.sh: snakefmt --check" >&2
.venv/bin/snakefmt --check Snakefile rules/
echo "check.sh: ruff check" >&2
.venv/bin/ruff check .
echo "check.sh: snakemake --lint" >&2
.venv/bin/snakemake --lint
echo "check.sh: pytest" >&2
.venv/bin/python -m pytest -q "$@"
