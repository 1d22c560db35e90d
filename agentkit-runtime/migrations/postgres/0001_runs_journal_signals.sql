CREATE TABLE agentkit_runs (
    id TEXT PRIMARY KEY,
    target TEXT NOT NULL,
    version BIGINT NOT NULL,
    input JSONB NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued','running','waiting_input',
        'waiting_approval','paused','succeeded','failed','cancelled')),
    attempts BIGINT NOT NULL DEFAULT 0,
    idempotency_key TEXT UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    output JSONB,
    error TEXT,
    usage JSONB NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL DEFAULT 0,
    owner TEXT,
    lease_until BIGINT
);

CREATE INDEX agentkit_runs_by_status ON agentkit_runs (status, created_at);

CREATE TABLE agentkit_journal (
    run_id TEXT NOT NULL REFERENCES agentkit_runs (id),
    seq BIGINT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    value JSONB NOT NULL,
    latency_ms BIGINT NOT NULL,
    usage JSONB NOT NULL,
    cost_usd DOUBLE PRECISION NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, seq),
    UNIQUE (run_id, key)
);

CREATE TABLE agentkit_signals (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES agentkit_runs (id),
    name TEXT NOT NULL,
    payload JSONB NOT NULL,
    delivered BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE INDEX agentkit_signals_pending ON agentkit_signals (run_id, name, delivered, id);
