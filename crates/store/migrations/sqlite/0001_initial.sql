-- The schema as first released (tables created only where missing: databases from before
-- numbered migrations have them already).
CREATE TABLE IF NOT EXISTS docs (
    kind TEXT NOT NULL,
    vault TEXT NOT NULL,
    key TEXT NOT NULL,
    parent TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL,
    PRIMARY KEY (kind, vault, key)
);
CREATE INDEX IF NOT EXISTS docs_parent ON docs(kind, vault, parent);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    vault TEXT NOT NULL,
    seq INTEGER NOT NULL,
    status TEXT NOT NULL,
    operation TEXT NOT NULL,
    bmt TEXT NOT NULL,
    start_time TEXT NOT NULL,
    item TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_vault_time ON jobs(vault, start_time DESC, seq DESC);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE INDEX IF NOT EXISTS jobs_item ON jobs(vault, item, status);
CREATE INDEX IF NOT EXISTS jobs_vault_status_time ON jobs(vault, status, start_time DESC, seq DESC);
CREATE INDEX IF NOT EXISTS jobs_vault_op_time ON jobs(vault, operation, start_time DESC, seq DESC);
CREATE INDEX IF NOT EXISTS jobs_start ON jobs(start_time);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedule_runs (
    vault TEXT NOT NULL,
    item TEXT NOT NULL,
    slot TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (vault, item, slot)
);
