#!/usr/bin/env bash
# Create (once) the project's virtual environment and link it as .venv in this checkout.
#
# The environment lives outside the clone, keyed on the hash of pyproject.toml (where every
# dependency is pinned), so a fresh clone or a rerun reuses it instead of reinstalling torch.
# Override the location with WSSS_VENV_ROOT.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
key=$(sha256sum pyproject.toml | cut -c1-16)
root=${WSSS_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/wsss-pipeline}
venv="$root/venv-$key"
if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    echo "install.sh: creating $venv" >&2
    rm -rf "$venv"
    mkdir -p "$root"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -e ".[test]"
    touch "$venv/.complete"
fi
# The library itself is installed editable on every run, so the shared venv imports this checkout.
"$venv/bin/pip" install --quiet --no-deps --no-build-isolation -e .
ln -sfn "$venv" .venv
echo "install.sh: environment ready at .venv -> $venv" >&2
