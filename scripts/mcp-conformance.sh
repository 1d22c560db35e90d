#!/usr/bin/env bash
# Run the official MCP conformance suite's client scenarios against agentkit's
# conformance_client example (server scenarios: see the report; conformance_server is partial).
# Needs scripts/install-mcp-peers.sh first. Exits non-zero if a scenario fails.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$root/tests/peers/node_modules"
[[ -x "$peers/.bin/node" ]] || { echo "run scripts/install-mcp-peers.sh" >&2; exit 1; }
cargo build --quiet --features mcp --example conformance_client --manifest-path "$root/Cargo.toml"
client="${CARGO_TARGET_DIR:-$root/target}/debug/examples/conformance_client"
fail=0
for s in initialize tools_call elicitation-sep1034-client-defaults sse-retry; do
    out="$("$peers/.bin/node" "$peers/.bin/conformance" client --command "$client" --scenario "$s" 2>&1 || true)"
    line="$(grep -E '^Passed:' <<<"$out" | tail -1)"
    echo "client/$s: ${line:-no result}"
    [[ "$line" == *" 0 failed"* ]] || fail=1
done
exit "$fail"
