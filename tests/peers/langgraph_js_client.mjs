// Drives an agentkit server with the official LangGraph JavaScript SDK
// (@langchain/langgraph-sdk, installed by scripts/install-mcp-peers.sh):
//   node langgraph_js_client.mjs <base-url> <api-key>
// The server has agent `echo` (answers with the user messages of its thread, joined by " | ")
// and `stepper` (calls its `step` tool twice, then answers "arrived"; told "hold", it calls
// its `hold` tool, which does not return until the run is cancelled).
// Prints one JSON object with what each SDK call returned or threw; the Rust test
// (agentkit-server/tests/langgraph_js.rs) asserts on it. An SDK call that throws where the
// script does not expect it ends the script with a non-zero status and the error on stderr.
import { randomUUID } from "node:crypto";
import { Client } from "@langchain/langgraph-sdk";

const [url, key] = process.argv.slice(2);
const client = new Client({ apiUrl: url, apiKey: key });
const said = (text) => ({ messages: [{ role: "user", content: text }] });
const out = {};

// What a call that should fail threw: the SDK's HTTP error has the status and the body text.
async function failure(promise) {
  try {
    const value = await promise;
    return { error: null, value };
  } catch (e) {
    let body = null;
    try {
      body = JSON.parse(e.text);
    } catch {
      body = e.text ?? null;
    }
    return { error: e.constructor.name, status: e.status ?? null, message: e.message, body };
  }
}

async function collect(stream) {
  const parts = [];
  for await (const part of stream) parts.push({ id: part.id ?? null, event: part.event, data: part.data });
  return parts;
}

// Assistants.
out.assistants = await client.assistants.search();
out.assistants_by_graph = await client.assistants.search({ graphId: "stepper" });
out.assistant = await client.assistants.get("echo");
out.graph = await client.assistants.getGraph("echo");
out.schemas = await client.assistants.getSchemas("echo");

// Threads, and runs on one.
const thread = await client.threads.create({ metadata: { user: "js" }, graphId: "echo" });
const tid = thread.thread_id;
out.thread = thread;
out.wait1 = await client.runs.wait(tid, "echo", { input: said("one") });
out.wait2 = await client.runs.wait(tid, "echo", {
  input: { messages: [{ type: "human", content: "two" }] },
  onDisconnect: "continue",
  durability: "async",
});
const created = await client.runs.create(tid, "echo", {
  input: said("three"),
  metadata: { source: "js" },
  streamResumable: true,
});
out.created = created;
out.joined = await client.runs.join(tid, created.run_id);
out.run = await client.runs.get(tid, created.run_id);

out.stream_values = await collect(client.runs.stream(tid, "echo", { input: said("four"), streamMode: "values" }));
out.stream_updates = await collect(client.runs.stream(tid, "echo", { input: said("five"), streamMode: ["updates"] }));
out.stream_tuples = await collect(
  client.runs.stream(tid, "echo", { input: said("six"), streamMode: "messages-tuple" }),
);

// A run on a thread that does not exist yet, made by the run.
const fresh = randomUUID();
out.fresh_id = fresh;
out.fresh_wait = await client.runs.wait(fresh, "echo", { input: said("fresh"), ifNotExists: "create" });
out.fresh_thread = await client.threads.get(fresh);

// Stateless runs.
out.stateless_wait = await client.runs.wait(null, "echo", { input: said("solo") });
out.stateless_stream = await collect(
  client.runs.stream(null, "echo", { input: said("alone"), streamMode: ["values", "updates"] }),
);

const background = await client.runs.create(null, "stepper", { input: said("go") });
out.stateless_created = background;
out.stateless_joined = await collect(
  client.runs.joinStream(null, background.run_id, { streamMode: ["updates"] }),
);
out.runs = await client.runs.list(tid);
out.runs_page = await client.runs.list(tid, { limit: 2, offset: 1, status: "success" });

// A stepper run streamed, then joined again: whole, after one of its events, and in fewer modes.
const stid = (await client.threads.create()).thread_id;
out.step_stream = await collect(
  client.runs.stream(stid, "stepper", { input: said("go"), streamMode: ["values", "updates"] }),
);
const stepRun = out.step_stream[0].data.run_id;
out.step_run = stepRun;
out.step_join = await collect(client.runs.joinStream(stid, stepRun));
const after = out.step_join.find((p) => p.event === "updates");
out.step_after_id = after.id;
out.step_resumed = await collect(client.runs.joinStream(stid, stepRun, { lastEventId: after.id }));
out.step_join_updates = await collect(client.runs.joinStream(stid, stepRun, { streamMode: ["updates"] }));
out.step_join_values = await collect(client.runs.joinStream(stid, stepRun, { streamMode: "values" }));

// A busy thread: `reject` refuses a second run; the first is cancelled.
const busy = (await client.threads.create()).thread_id;
const held = await client.runs.create(busy, "stepper", { input: said("hold") });
out.held = held;
out.rejected = await failure(
  client.runs.create(busy, "echo", { input: said("too soon"), multitaskStrategy: "reject" }),
);
out.rejected_wait = await failure(
  client.runs.wait(busy, "echo", { input: said("too soon"), multitaskStrategy: "reject" }),
);
out.cancelled = await client.runs.cancel(busy, held.run_id, true);
out.held_after = await client.runs.get(busy, held.run_id);
out.cancel_finished = await failure(client.runs.cancel(tid, created.run_id));

// State, history, get, search, update, copy.
out.state = await client.threads.getState(tid);
out.history = await client.threads.getHistory(tid, { limit: 2 });
// A checkpoint by id and as the object and config the SDK's types name.
out.state_at = await client.threads.getState(tid, "4");
out.state_at_object = await client.threads.getState(tid, { checkpoint_id: "4" });
out.history_before = await client.threads.getHistory(tid, {
  limit: 1,
  before: { configurable: { checkpoint_id: "4" } },
});
out.history_step = await client.threads.getHistory(tid, { metadata: { step: 2 } });
out.search_ids = await client.threads.search({ ids: [tid] });
out.thread_after = await client.threads.get(tid);
out.search = await client.threads.search({ metadata: { user: "js" } });
out.search_idle = await client.threads.search({ status: "idle", limit: 100 });
out.updated = await client.threads.update(tid, { metadata: { plan: "pro" } });
out.copy = await client.threads.copy(tid);
out.copy_state = await client.threads.getState(out.copy.thread_id);
out.if_exists = await client.threads.create({ threadId: tid, ifExists: "do_nothing" });
out.if_exists_raise = await failure(client.threads.create({ threadId: tid, ifExists: "raise" }));
out.state_subgraphs = await client.threads.getState(tid, undefined, { subgraphs: true });
out.thread_count = await client.threads.count({ metadata: { user: "js" } });

// Crons.
out.cron_thread = await client.crons.createForThread(tid, "echo", {
  schedule: "0 9 * * *",
  input: said("daily"),
  metadata: { kind: "thread" },
});
out.cron = await client.crons.create("echo", { schedule: "30 8 * * 1", input: said("weekly") });
const cronThread = randomUUID();
out.cron_new_thread_id = cronThread;
out.cron_new_thread = await client.crons.createForThread(cronThread, "echo", {
  schedule: "0 7 * * *",
  input: said("morning"),
  ifNotExists: "create",
});
out.cron_made_thread = await client.threads.get(cronThread);
out.crons_thread = await client.crons.search({ threadId: tid });
out.crons_all = await client.crons.search();
out.cron_updated = await client.crons.update(out.cron.cron_id, { enabled: false });
await client.crons.delete(out.cron_thread.cron_id);
await client.crons.delete(out.cron.cron_id);
await client.crons.delete(out.cron_new_thread.cron_id);
out.crons_left = await client.crons.search();

// Store items.
await client.store.putItem(["users", "u1"], "prefs", { color: "blue" });
await client.store.putItem(["users", "u2"], "prefs", { color: "red" }, { index: false });
out.item = await client.store.getItem(["users", "u1"], "prefs", { refreshTtl: true });
out.items = await client.store.searchItems(["users"], { filter: { color: "blue" } });
out.namespaces = await client.store.listNamespaces({ prefix: ["users"] });
await client.store.deleteItem(["users", "u1"], "prefs");
out.item_deleted = await failure(client.store.getItem(["users", "u1"], "prefs"));
out.items_left = await client.store.searchItems(["users"]);

// threads.delete.
await client.threads.delete(tid);
out.deleted = await failure(client.threads.get(tid));

// A thread's stream (threads.joinStream): a held run (streamed from its start), cancelled,
// then a run made after it; read until both have ended, then leave (the stream stays open).
async function readThread(stream, leave, ends, onPart) {
  const parts = [];
  let ended = 0;
  try {
    for await (const part of stream) {
      parts.push({ id: part.id ?? null, event: part.event, data: part.data });
      if (onPart) await onPart(part, parts);
      if (part.event === "end" && ++ended === ends) {
        leave.abort();
        break;
      }
    }
  } catch (e) {
    if (!leave.signal.aborted) throw e;
  }
  return parts;
}
const streamed = (await client.threads.create()).thread_id;
const streamedHeld = await client.runs.create(streamed, "stepper", {
  input: said("hold"),
  streamMode: ["values", "updates"],
});
let streamedNext = null;
let leave = new AbortController();
out.thread_stream = await readThread(
  client.threads.joinStream(streamed, { signal: leave.signal }),
  leave,
  2,
  async (part, parts) => {
    if (part.event === "metadata" && parts.length === 1) {
      await client.runs.cancel(streamed, streamedHeld.run_id, true);
    }
    if (part.event === "end" && streamedNext === null) {
      streamedNext = await client.runs.create(streamed, "echo", { input: said("next") });
    }
  },
);
out.thread_stream_held = streamedHeld.run_id;
out.thread_stream_next = streamedNext.run_id;
// Joined again after the held run's values (its last event but `end`): the rest, across runs.
const heldValues = out.thread_stream.find((p) => p.event === "values");
out.thread_stream_after = heldValues.id;
leave = new AbortController();
out.thread_resumed = await readThread(
  client.threads.joinStream(streamed, {
    lastEventId: heldValues.id,
    streamMode: "run_modes",
    signal: leave.signal,
  }),
  leave,
  2,
);

// runs.delete: a finished run goes (from the list too); again, or a run still going, is refused.
out.runs_before_delete = await client.runs.list(streamed, { select: ["run_id", "status"] });
out.run_deleted = await client.runs.delete(streamed, streamedNext.run_id);
out.run_deleted_get = await failure(client.runs.get(streamed, streamedNext.run_id));
out.run_delete_again = await failure(client.runs.delete(streamed, streamedNext.run_id));
out.runs_after_delete = await client.runs.list(streamed, { select: ["run_id"] });
const stillHeld = await client.runs.create(streamed, "stepper", { input: said("hold") });
out.run_delete_going = await failure(client.runs.delete(streamed, stillHeld.run_id));
await client.runs.cancel(streamed, stillHeld.run_id, true);
out.run_still_there = await client.runs.get(streamed, stillHeld.run_id);
out.run_select_bad = await failure(client.runs.list(streamed, { select: ["run_id", "nope"] }));

// A client that goes away cancels its run when it asked for that, and only then.
const gone = (await client.threads.create()).thread_id;
// Stream `stream` until its `metadata` event, then leave (abort the request): the run id.
async function leaveAfterMetadata(stream, abort) {
  let runId = null;
  try {
    for await (const part of stream) {
      if (part.event === "metadata") {
        runId = part.data.run_id;
        abort.abort();
      }
    }
  } catch (e) {
    if (!abort.signal.aborted) throw e;
  }
  return runId;
}
let abort = new AbortController();
const leftStream = await leaveAfterMetadata(
  client.runs.stream(gone, "stepper", { input: said("hold"), onDisconnect: "cancel", signal: abort.signal }),
  abort,
);
await client.runs.join(gone, leftStream);
out.left_stream = await client.runs.get(gone, leftStream);

const heldJoin = await client.runs.create(gone, "stepper", { input: said("hold") });
abort = new AbortController();
await leaveAfterMetadata(
  client.runs.joinStream(gone, heldJoin.run_id, { cancelOnDisconnect: true, signal: abort.signal }),
  abort,
);
await client.runs.join(gone, heldJoin.run_id);
out.left_join = await client.runs.get(gone, heldJoin.run_id);

// The SDK retries a `wait` its caller aborted (4 times, backing off), so this one does not retry.
const once = new Client({ apiUrl: url, apiKey: key, callerOptions: { maxRetries: 0 } });
abort = new AbortController();
const waiting = failure(
  once.runs.wait(gone, "stepper", { input: said("hold"), onDisconnect: "cancel", signal: abort.signal }),
);
let waited = null;
while (waited === null) {
  const [latest] = await client.runs.list(gone, { limit: 1 });
  if (latest && latest.run_id !== heldJoin.run_id) waited = latest.run_id;
  else await new Promise((resolve) => setTimeout(resolve, 20));
}
abort.abort();
out.wait_left = await waiting;
await client.runs.join(gone, waited);
out.left_wait = await client.runs.get(gone, waited);

// The default (`continue`): the run finishes without its client.
abort = new AbortController();
const leftContinue = await leaveAfterMetadata(
  client.runs.stream(gone, "stepper", { input: said("go"), signal: abort.signal }),
  abort,
);
out.left_continue_values = await client.runs.join(gone, leftContinue);
out.left_continue = await client.runs.get(gone, leftContinue);

// Auth: the key goes as `x-api-key`; a wrong key, or none, is refused.
const wrong = new Client({ apiUrl: url, apiKey: "not-the-key", callerOptions: { maxRetries: 0 } });
out.wrong_key = await failure(wrong.threads.search());
const none = new Client({ apiUrl: url, apiKey: null, callerOptions: { maxRetries: 0 } });
out.no_key = await failure(none.assistants.search());

console.log(JSON.stringify(out));
