#!/usr/bin/env bash
# Runs the pattern examples against a local OpenAI-compatible server that answers every
# structured request with the first valid instance of its JSON schema (the most literal
# strict-mode model): they must finish, picking only routes and workers that exist.
# The server is started on a free 127.0.0.1 port and always stopped (by its PID).
set -euo pipefail
cd "$(dirname "$0")/.."

examples=(router orchestrator intent_classifier evaluator_optimizer)

cargo build --quiet --example schema_first_server
for example in "${examples[@]}"; do
  cargo build --quiet --example "$example"
done

log="$(mktemp)"
server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -f "$log"
}
trap stop_server EXIT

# `cargo run` execs the example, so $! is the server's own PID.
cargo run --quiet --example schema_first_server -- 0 >"$log" 2>&1 &
server_pid=$!

base_url=""
for _ in $(seq 1 100); do
  base_url="$(sed -n 's/^listening on \(http:.*\)$/\1/p' "$log")"
  [ -n "$base_url" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "the schema-first server exited at start:" >&2
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done
if [ -z "$base_url" ]; then
  echo "the schema-first server did not say where it listens within 10 s:" >&2
  cat "$log" >&2
  exit 1
fi
echo "schema-first server at $base_url (pid $server_pid)"

for example in "${examples[@]}"; do
  echo "--- example $example"
  if ! env -u ANTHROPIC_API_KEY OPENAI_API_KEY=x OPENAI_BASE_URL="$base_url" \
    cargo run --quiet --example "$example"; then
    echo "example $example failed against the schema-first server" >&2
    exit 1
  fi
done
