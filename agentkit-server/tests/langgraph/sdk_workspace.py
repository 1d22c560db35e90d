"""Drive an agentkit server with the official LangGraph SDK (`langgraph-sdk` from PyPI) as
two workspaces.

Usage: sdk_workspace.py <base-url> <key of workspace A> <key of workspace B>

Workspace A creates a thread, runs its agent `bot` on it twice, and stores an item; workspace
B (which has its own `bot`) tries to read, run on, copy, patch and delete A's thread and read
A's run, and lists its own threads and items. Prints one JSON object with what each call
returned or raised; the Rust test (agentkit-server/tests/langgraph_sdk.rs) asserts on it.
"""

import asyncio
import json
import sys

import httpx
from langgraph_sdk import get_client
from langgraph_sdk.errors import APIStatusError


def said(text):
    return {"messages": [{"role": "user", "content": text}]}


async def outcome(coro):
    try:
        return {"ok": await coro}
    except APIStatusError as e:
        return {"error": type(e).__name__, "status": e.response.status_code,
                "detail": e.response.json().get("detail")}
    except httpx.HTTPStatusError as e:
        return {"error": type(e).__name__, "status": e.response.status_code,
                "detail": e.response.json().get("detail")}


async def main(url, key_a, key_b):
    a = get_client(url=url, api_key=key_a)
    b = get_client(url=url, api_key=key_b)
    out = {}

    out["a_assistants"] = await a.assistants.search()
    thread = await a.threads.create(metadata={"owner": "a"})
    tid = thread["thread_id"]
    out["a_thread"] = thread
    out["a_wait1"] = await a.runs.wait(tid, "bot", input=said("one"))
    out["a_wait2"] = await a.runs.wait(tid, "bot", input=said("two"))
    created = await a.runs.create(tid, "bot", input=said("three"))
    out["a_joined"] = await a.runs.join(tid, created["run_id"])
    out["a_run"] = await a.runs.get(tid, created["run_id"])
    out["a_runs"] = await a.runs.list(tid)
    out["a_state"] = await a.threads.get_state(tid)
    out["a_copy"] = await a.threads.copy(tid)
    out["a_copy_state"] = await a.threads.get_state(out["a_copy"]["thread_id"])
    out["a_search"] = await a.threads.search(limit=100)
    await a.store.put_item(["prefs"], "color", {"value": "blue"})
    out["a_item"] = await a.store.get_item(["prefs"], "color")
    parts = []
    async for part in a.runs.stream(tid, "bot", input=said("four"),
                                    stream_mode=["values", "updates"]):
        parts.append({"event": part.event, "data": part.data})
    out["a_stream"] = parts

    missing = "00000000-0000-7000-8000-000000000000"
    out["b_get"] = await outcome(b.threads.get(tid))
    out["b_get_missing"] = await outcome(b.threads.get(missing))
    out["b_state"] = await outcome(b.threads.get_state(tid))
    out["b_history"] = await outcome(b.threads.get_history(tid))
    out["b_wait"] = await outcome(b.runs.wait(tid, "bot", input=said("intrude")))
    out["b_run"] = await outcome(b.runs.get(tid, created["run_id"]))
    out["b_runs"] = await outcome(b.runs.list(tid))
    out["b_copy"] = await outcome(b.threads.copy(tid))
    out["b_update"] = await outcome(b.threads.update(tid, metadata={"owner": "b"}))
    out["b_delete"] = await outcome(b.threads.delete(tid))
    out["b_search"] = await b.threads.search(limit=100)
    out["b_item"] = await outcome(b.store.get_item(["prefs"], "color"))
    out["b_items"] = await b.store.search_items(["prefs"])
    # B's own thread of the same id is B's, empty, and leaves A's alone.
    out["b_same_id"] = await b.threads.create(thread_id=tid, if_exists="do_nothing",
                                              metadata={"owner": "b"})
    out["b_same_id_wait"] = await b.runs.wait(tid, "bot", input=said("mine"))

    out["a_after"] = await a.threads.get(tid)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
