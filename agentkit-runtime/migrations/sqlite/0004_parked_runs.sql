ALTER TABLE runs ADD COLUMN wake_at INTEGER;

CREATE INDEX runs_parked ON runs (wake_at) WHERE wake_at IS NOT NULL;
