"""A stdio MCP server (official Python SDK 2.x) whose one tool is held until the test lets it
answer, and which logs what it really sees to the file named by `TOOL_LOG`, one line per event:

- `start <text> <agentkit/runId> <agentkit/idempotencyKey>` when a call starts running (the
  run id and idempotency key agentkit sent in the request's `_meta`, `-` when absent);
- `cancelled <text> <idempotency key>` when the client cancelled the call in flight (MCP
  `notifications/cancelled`, or the connection closed under it);
- `done <text> <idempotency key>` when it answered.

Tool: `hold(text)` waits until the file named by `TOOL_RELEASE` exists (at most 120 s, so a
server left behind by a killed parent cannot wait forever), then answers `held: <text>`.
"""

import os

import anyio

from mcp.server.mcpserver import Context, MCPServer

LOG = os.environ["TOOL_LOG"]
RELEASE = os.environ["TOOL_RELEASE"]
server = MCPServer("held")


def record(line: str) -> None:
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@server.tool()
async def hold(text: str, ctx: Context) -> str:
    """Answer once the test lets it."""
    meta = ctx.request_context.meta or {}
    run = meta.get("agentkit/runId") or "-"
    key = meta.get("agentkit/idempotencyKey") or "-"
    record(f"start {text} {run} {key}")
    try:
        with anyio.fail_after(120):
            while not os.path.exists(RELEASE):
                await anyio.sleep(0.02)
    except anyio.get_cancelled_exc_class():
        record(f"cancelled {text} {key}")
        raise
    record(f"done {text} {key}")
    return f"held: {text}"


if __name__ == "__main__":
    server.run()
