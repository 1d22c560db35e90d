"""Resume LangGraph streams with the official LangGraph SDK (`langgraph-sdk` from PyPI).

Usage: sdk_resume.py <base-url> <api-key> <proxy-url>

Streams a run of `stepper`, stops reading after the first events and joins its stream again
with the `id` of the last event read (`last_event_id`), then joins it from the start; then
streams a second run through <proxy-url>, a proxy that cuts the stream's connection once, so
the SDK reconnects by itself (to the stream's `Location`, with `Last-Event-ID`). Prints one
JSON object with every part read ({event, data, id}); the Rust test
(agentkit-server/tests/langgraph_sdk.rs) asserts on it.
"""

import asyncio
import json
import sys

from langgraph_sdk import get_client

MODES = ["values", "updates", "messages-tuple"]


def said(text):
    return {"messages": [{"role": "user", "content": text}]}


def part(p):
    return {"event": p.event, "data": p.data, "id": p.id}


async def main(url, key, proxy_url):
    client = get_client(url=url, api_key=key)
    out = {}

    thread = await client.threads.create()
    tid = thread["thread_id"]
    stream = client.runs.stream(tid, "stepper", input=said("go"), stream_mode=MODES)
    first = []
    async for p in stream:
        first.append(part(p))
        if len(first) == 4:
            break
    # Disconnect: the run goes on without this client.
    await stream.aclose()
    run_id = first[0]["data"]["run_id"]
    out["first"] = first
    out["rest"] = [
        part(p)
        async for p in client.runs.join_stream(
            tid, run_id, stream_mode=MODES, last_event_id=first[-1]["id"]
        )
    ]
    out["full"] = [
        part(p) async for p in client.runs.join_stream(tid, run_id, stream_mode=MODES)
    ]

    # The SDK resumes a dropped stream by itself.
    proxied = get_client(url=proxy_url, api_key=key)
    thread = await client.threads.create()
    tid = thread["thread_id"]
    out["dropped"] = [
        part(p)
        async for p in proxied.runs.stream(
            tid, "stepper", input=said("again"), stream_mode=MODES
        )
    ]
    run_id = out["dropped"][0]["data"]["run_id"]
    out["dropped_full"] = [
        part(p) async for p in client.runs.join_stream(tid, run_id, stream_mode=MODES)
    ]

    print(json.dumps(out, default=str))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
