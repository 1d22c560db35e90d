CREATE TABLE agentkit_kv (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value JSONB NOT NULL,
    expires_at BIGINT,
    PRIMARY KEY (namespace, key)
);
