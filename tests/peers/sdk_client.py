"""Drives agentkit's /mcp with the official MCP Python SDK (`mcp` 2.x):
python sdk_client.py <url> <key> <tool> <message>
Prints one JSON line: {"tools": [...], "text": "...", "is_error": bool} or {"error": "..."}."""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


async def main(url: str, key: str, tool: str, message: str) -> None:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http:
        async with streamable_http_client(url, http_client=http) as streams:
            read, write = streams[0], streams[1]
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                tools = await session.list_tools()
                result = await session.call_tool(tool, {"message": message})
                text = "".join(
                    c.text for c in getattr(result, "content", []) if getattr(c, "type", "") == "text"
                )
                print(
                    json.dumps(
                        {
                            "tools": [t.name for t in tools.tools],
                            "text": text,
                            "is_error": bool(getattr(result, "is_error", getattr(result, "isError", False))),
                            "protocol": str(getattr(init, "protocol_version", getattr(init, "protocolVersion", ""))),
                        }
                    )
                )


if __name__ == "__main__":
    try:
        asyncio.run(main(*sys.argv[1:5]))
    except BaseException as e:  # noqa: BLE001 - the test reads the error

        def leaves(x: BaseException) -> list[str]:
            inner = getattr(x, "exceptions", None)
            if inner:
                return [m for sub in inner for m in leaves(sub)]
            return [f"{type(x).__name__}: {x}"]

        print(json.dumps({"error": " | ".join(leaves(e))}))
