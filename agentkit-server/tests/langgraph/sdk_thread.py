"""A thread's stream and run deletion with the official LangGraph SDK (`langgraph-sdk` from PyPI).

Usage: sdk_thread.py <base-url> <api-key>

Starts a `holder` run told "hold" on a thread (it runs until cancelled) and joins the thread's
stream (`threads.join_stream`): cancels the held run at its first event, starts an `echo` run
once the held one has ended, and reads until both have ended. Joins the thread's stream again
after the held run's `values` event (`last_event_id`). Lists the thread's runs with `select`,
deletes the echo run (`runs.delete`), then tries again and tries to delete a run still going.
Prints one JSON object; the Rust test (agentkit-server/tests/langgraph_sdk.rs) asserts on it.
"""

import asyncio
import json
import sys

import httpx
from langgraph_sdk import get_client
from langgraph_sdk.errors import APIStatusError


def said(text):
    return {"messages": [{"role": "user", "content": text}]}


def part(p):
    return {"event": p.event, "data": p.data, "id": p.id}


async def expect_error(coro):
    try:
        await coro
    except APIStatusError as e:
        return {"error": type(e).__name__, "status": e.response.status_code}
    except httpx.HTTPStatusError as e:
        return {"error": type(e).__name__, "status": e.response.status_code}
    return {"error": None}


async def read_thread(stream, ends, on_part=None):
    """The parts of a thread stream until `ends` runs have ended (the stream stays open)."""
    parts = []
    ended = 0
    async for p in stream:
        parts.append(part(p))
        if on_part is not None:
            await on_part(p, parts)
        if p.event == "end":
            ended += 1
            if ended == ends:
                break
    return parts


async def main(url, key):
    client = get_client(url=url, api_key=key)
    out = {}

    tid = (await client.threads.create())["thread_id"]
    held = await client.runs.create(
        tid, "holder", input=said("hold"), stream_mode=["values", "updates"]
    )
    out["held"] = held["run_id"]
    after = {}

    async def steer(p, parts):
        if p.event == "metadata" and len(parts) == 1:
            await client.runs.cancel(tid, held["run_id"], wait=True)
        if p.event == "end" and "run" not in after:
            after["run"] = await client.runs.create(tid, "echo", input=said("next"))

    # `threads.join_stream` is a coroutine that answers the stream (unlike `runs.join_stream`).
    out["stream"] = await read_thread(await client.threads.join_stream(tid), 2, steer)
    out["next"] = after["run"]["run_id"]
    values = next(p for p in out["stream"] if p["event"] == "values")
    out["after_id"] = values["id"]
    out["resumed"] = await read_thread(
        await client.threads.join_stream(tid, last_event_id=values["id"]), 2
    )

    out["listed"] = await client.runs.list(tid, select=["run_id", "status"])
    out["deleted"] = await client.runs.delete(tid, out["next"])
    out["deleted_get"] = await expect_error(client.runs.get(tid, out["next"]))
    out["deleted_again"] = await expect_error(client.runs.delete(tid, out["next"]))
    out["listed_after"] = await client.runs.list(tid, select=["run_id"])
    going = await client.runs.create(tid, "holder", input=said("hold"))
    out["delete_going"] = await expect_error(client.runs.delete(tid, going["run_id"]))
    await client.runs.cancel(tid, going["run_id"], wait=True)
    out["going_after"] = await client.runs.get(tid, going["run_id"])
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
