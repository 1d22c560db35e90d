CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    version INTEGER NOT NULL,
    input TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued','running','waiting_input',
        'waiting_approval','paused','succeeded','failed','cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    output TEXT,
    error TEXT,
    usage TEXT NOT NULL,
    cost_usd REAL NOT NULL DEFAULT 0
);

CREATE INDEX runs_by_status ON runs (status, created_at);

CREATE TABLE journal (
    run_id TEXT NOT NULL REFERENCES runs (id),
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    latency_ms INTEGER NOT NULL,
    usage TEXT NOT NULL,
    cost_usd REAL NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, key)
);

CREATE TABLE signals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs (id),
    name TEXT NOT NULL,
    payload TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE INDEX signals_pending ON signals (run_id, name, delivered, id);
