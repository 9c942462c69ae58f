#!/usr/bin/env bash
# The whole test suite on a fresh machine: install the real parts the tests use (embedding model,
# ONNX Runtime, llama.cpp server with SmolLM2, Debian's Chromium for the report's rendering test),
# then every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
PALATE_SKIP_QWEN=1 scripts/setup.sh embed llm
if ! command -v chromium >/dev/null; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends chromium
fi
cargo test --release --locked "$@"
