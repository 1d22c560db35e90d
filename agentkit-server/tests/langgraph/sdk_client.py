"""Drive an agentkit server with the official LangGraph SDK (`langgraph-sdk` from PyPI).

Usage: sdk_client.py <base-url> <api-key>

Prints one JSON object with what each SDK call returned; the Rust test
(agentkit-server/tests/langgraph_sdk.rs) asserts on it. An SDK call that raises ends the
script with a non-zero status and the traceback on stderr.
"""

import asyncio
import json
import sys

import httpx
from langgraph_sdk import get_client
from langgraph_sdk.errors import APIStatusError


def said(text):
    return {"messages": [{"role": "user", "content": text}]}


async def expect_error(coro):
    try:
        await coro
    except APIStatusError as e:
        return {"error": type(e).__name__, "status": e.response.status_code}
    except httpx.HTTPStatusError as e:
        # runs.wait and runs.join raise httpx's error (the SDK's reconnecting requests).
        return {"error": type(e).__name__, "status": e.response.status_code}
    return {"error": None}


async def main(url, key):
    client = get_client(url=url, api_key=key)
    out = {}

    out["assistants"] = await client.assistants.search()
    out["assistant"] = await client.assistants.get("echo")
    out["schemas"] = await client.assistants.get_schemas("echo")

    thread = await client.threads.create(metadata={"user": "sdk"})
    tid = thread["thread_id"]
    out["thread"] = thread

    out["wait1"] = await client.runs.wait(tid, "echo", input=said("one"))
    out["wait2"] = await client.runs.wait(
        tid, "echo", input={"messages": [{"type": "human", "content": "two"}]}
    )

    created = await client.runs.create(
        tid, "echo", input=said("three"), metadata={"source": "sdk"}
    )
    out["created"] = created
    out["joined"] = await client.runs.join(tid, created["run_id"])
    out["run"] = await client.runs.get(tid, created["run_id"])

    parts = []
    async for part in client.runs.stream(
        tid, "echo", input=said("four"), stream_mode=["values", "updates"]
    ):
        parts.append({"event": part.event, "data": part.data})
    out["stream"] = parts

    out["stateless_wait"] = await client.runs.wait(None, "echo", input=said("solo"))
    stateless = []
    async for part in client.runs.stream(None, "echo", input=said("alone")):
        stateless.append({"event": part.event, "data": part.data})
    out["stateless_stream"] = stateless
    tuples = []
    async for part in client.runs.stream(
        None, "echo", input=said("chunks"), stream_mode="messages-tuple"
    ):
        tuples.append({"event": part.event, "data": part.data})
    out["messages_stream"] = tuples

    out["runs"] = await client.runs.list(tid)
    out["state"] = await client.threads.get_state(tid)
    out["history"] = await client.threads.get_history(tid, limit=2)
    out["thread_after"] = await client.threads.get(tid)
    out["search"] = await client.threads.search(metadata={"user": "sdk"})
    out["updated"] = await client.threads.update(tid, metadata={"plan": "pro"})
    out["copy"] = await client.threads.copy(tid)

    out["cancel_finished"] = await expect_error(
        client.runs.cancel(tid, created["run_id"])
    )
    out["rollback"] = await expect_error(
        client.runs.wait(tid, "echo", input=said("x"), multitask_strategy="rollback")
    )
    first = await client.runs.create(tid, "echo", input=said("five"))
    second = await client.runs.create(
        tid, "echo", input=said("six"), multitask_strategy="enqueue"
    )
    await client.runs.join(tid, second["run_id"])
    out["enqueued"] = [
        await client.runs.get(tid, first["run_id"]),
        await client.runs.get(tid, second["run_id"]),
    ]

    cron = await client.crons.create_for_thread(
        tid, "echo", schedule="0 9 * * *", input=said("daily"), timezone="Europe/Lisbon"
    )
    out["cron"] = cron
    out["crons"] = await client.crons.search(thread_id=tid)
    out["cron_updated"] = await client.crons.update(cron["cron_id"], enabled=False)
    await client.crons.delete(cron["cron_id"])
    out["crons_left"] = await client.crons.count()

    await client.store.put_item(["users", "u1"], key="prefs", value={"color": "blue"})
    out["item"] = await client.store.get_item(["users", "u1"], key="prefs")
    out["items"] = await client.store.search_items(["users"], filter={"color": "blue"})
    out["namespaces"] = await client.store.list_namespaces(prefix=["users"])
    await client.store.delete_item(["users", "u1"], key="prefs")
    out["item_deleted"] = await expect_error(
        client.store.get_item(["users", "u1"], key="prefs")
    )

    await client.threads.delete(tid)
    out["deleted"] = await expect_error(client.threads.get(tid))

    print(json.dumps(out, default=str))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
