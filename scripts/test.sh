#!/usr/bin/env bash
# The project's one test command. Installs what the tests need (idempotent, from the package
# registries), then runs the format check, clippy and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# --- what the tests need -------------------------------------------------------------------
for installer in scripts/install-*.sh; do
  [ -e "$installer" ] || continue
  step "install: $installer"
  bash "$installer"
done

# --- checks ----------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo doc (all features, broken links are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --quiet

step "agentkit-core builds alone without default features (no HTTP client)"
cargo check -p agentkit-core --no-default-features

step "cargo test (workspace, all features)"
cargo test --workspace --all-features

step "MCP conformance suite: client scenarios"
bash scripts/mcp-conformance.sh

step "pattern examples against a schema-first strict model"
bash scripts/strict-models.sh

step "quickstart runs offline"
env -u OPENAI_API_KEY -u ANTHROPIC_API_KEY -u GEMINI_API_KEY -u GOOGLE_API_KEY \
  cargo run --quiet --example quickstart
