#!/usr/bin/env bash
# Install the Python clients agentkit-server's compatibility tests drive the server with, into
# a virtualenv at tests/peers/.venv:
#   langgraph-sdk (the official LangGraph Agent Server SDK) and mcp (the official MCP Python
#   SDK, 2.x), pinned below.
# Idempotent: does nothing when the venv already has exactly these pins.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/tests/peers/.venv"
pins=("langgraph-sdk==0.4.14" "mcp==2.3.0")

if ! command -v python3 >/dev/null 2>&1; then
    echo "install-python-clients: python3 (>= 3.10, with the venv module) is required" >&2
    exit 1
fi

stamp="$venv/.agentkit-pins"
want="$(printf '%s\n' "${pins[@]}")"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/python" ]]; then
    echo "install-python-clients: up to date ($venv)"
    exit 0
fi

if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${pins[@]}"
printf '%s\n' "${pins[@]}" >"$stamp"
echo "install-python-clients: installed ${pins[*]} into $venv"
