// Drives agentkit's /mcp with the official MCP TypeScript SDK (@modelcontextprotocol/sdk):
// node sdk_client.mjs <url> <key> <tool> <message>
// Prints one JSON line: {"tools": [...], "text": "...", "is_error": bool} or {"error": "..."}.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key, tool, message] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "agentkit-ts-sdk-test", version: "1.0.0" });
try {
  await client.connect(transport);
  const { tools } = await client.listTools();
  const result = await client.callTool({ name: tool, arguments: { message } });
  const text = (result.content ?? []).filter((c) => c.type === "text").map((c) => c.text).join("");
  console.log(JSON.stringify({
    tools: tools.map((t) => t.name),
    text,
    is_error: Boolean(result.isError),
    protocol: transport.protocolVersion ?? null,
  }));
  await client.close();
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.message ?? e) }));
}
// An open GET stream would keep node running after an error.
process.exit(0);
