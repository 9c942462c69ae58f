#!/usr/bin/env bash
# The whole test suite on a fresh machine: install the real parts the tests use (embedding model,
# ONNX Runtime, llama.cpp server with SmolLM2), then every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
PALATE_SKIP_QWEN=1 scripts/setup.sh embed llm
cargo test --release --locked "$@"
