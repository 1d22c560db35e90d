CREATE TABLE docs (
    collection TEXT NOT NULL,
    id TEXT NOT NULL,
    value TEXT NOT NULL,
    revision INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (collection, id)
);

CREATE INDEX runs_by_created ON runs (created_at, id);
CREATE INDEX runs_by_target ON runs (target, created_at, id);
