"""A stdio MCP server (official Python SDK 2.x) whose tools append a line to the file named by
`TOOL_LOG` before they answer, so a test can count how often each tool really ran.

Tools: `read_file(path)` answers a short Markdown text (for a path with `token` in it: the
value of `TOOL_SECRET`, a credential a tool hands back); `send_message(text)` answers `sent`.
"""

import os

from mcp.server.mcpserver import MCPServer

LOG = os.environ["TOOL_LOG"]
server = MCPServer("ops")


def record(line: str) -> None:
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


@server.tool()
def read_file(path: str) -> str:
    """Read a file."""
    record(f"read {path}")
    if "token" in path:
        return os.environ.get("TOOL_SECRET", "")
    return "# Docs\nHello."


@server.tool()
def send_message(text: str) -> str:
    """Post a message."""
    record(f"send {text}")
    return "sent"


if __name__ == "__main__":
    server.run()
