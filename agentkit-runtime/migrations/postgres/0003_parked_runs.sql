ALTER TABLE agentkit_runs ADD COLUMN wake_at BIGINT;

CREATE INDEX agentkit_runs_parked ON agentkit_runs (wake_at) WHERE wake_at IS NOT NULL;
