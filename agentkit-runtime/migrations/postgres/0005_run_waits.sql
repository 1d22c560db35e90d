-- What a waiting run (waiting_input, waiting_approval) waits for: a JSON array of signal
-- names, any of which resumes it. NULL for every other run, and for runs that started waiting
-- before this column existed (recovery re-executes those to find out, as it always did).
ALTER TABLE agentkit_runs ADD COLUMN waiting_for JSONB;
