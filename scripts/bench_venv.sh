#!/usr/bin/env bash
# The Python virtual environment of the benchmarks' baselines, ${PALATE_CACHE:-.cache}/bench-venv:
# fastembed and ONNX Runtime (scripts/bench_embed.py) and the openai package
# (scripts/bench_naive.py), pinned. Idempotent: creates the venv if missing and installs the pins
# when any is missing (or at another version). Prints the venv's python, an absolute path, as its
# only line on stdout.
#   py=$(scripts/bench_venv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PALATE_CACHE:-.cache}/bench-venv
pins=(fastembed==0.9.1 onnxruntime==1.24.4 openai==2.54.0)
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (p.split("==") for p in sys.argv[1:])))' \
    "${pins[@]}" 2>/dev/null; then
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "${pins[@]}" >&2
fi
echo "$(cd "$venv" && pwd)/bin/python"
