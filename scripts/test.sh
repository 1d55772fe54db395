#!/usr/bin/env bash
# Runs deckhand's whole test suite on a fresh Debian machine: installs what is missing
# (scripts/deps.sh), checks formatting and lints, then runs every test against real
# components (each test starts its own etcd; Docker is the machine's engine).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
# A one-off run of the whole suite gains nothing from incremental caches, and they double
# the size of target/ (CI's disk once ran out linking the test binaries).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked --all-targets "$@"
