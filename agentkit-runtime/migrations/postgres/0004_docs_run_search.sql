CREATE TABLE agentkit_docs (
    collection TEXT NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    value JSONB NOT NULL,
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (collection, id)
);

CREATE INDEX agentkit_runs_by_created ON agentkit_runs (created_at, id);
CREATE INDEX agentkit_runs_by_target ON agentkit_runs (target, created_at, id);
