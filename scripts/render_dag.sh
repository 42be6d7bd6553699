#!/usr/bin/env bash
# Regenerate docs/rulegraph.svg, the README's picture of the DAG: one node per rule of the default target
# (every method, config/config.yaml), drawn by graphviz (Debian: apt-get install graphviz).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v dot >/dev/null || { echo "render_dag.sh: graphviz's dot not found (apt-get install graphviz)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# planned in an empty directory: the picture is the same whatever this checkout has already run
.venv/bin/snakemake --quiet all --snakefile "$PWD/Snakefile" --configfile "$PWD/config/config.yaml" \
    --directory "$tmp" --rulegraph > "$tmp/rulegraph.dot"
dot -Tsvg "$tmp/rulegraph.dot" > "$tmp/rulegraph.svg"
mv "$tmp/rulegraph.svg" docs/rulegraph.svg
echo "render_dag.sh: wrote docs/rulegraph.svg" >&2
