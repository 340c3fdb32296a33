-- The schema of the SQLite store's migrations 0001 to 0003, for PostgreSQL: documents, the job
-- table with its queue columns, named leases (elected roles), schedule slots and nodes. Text compares
-- byte by byte (COLLATE "C"), as in SQLite, so keys and RFC 3339 times sort alike on both.
CREATE TABLE docs (
    kind TEXT COLLATE "C" NOT NULL,
    vault TEXT COLLATE "C" NOT NULL,
    key TEXT COLLATE "C" NOT NULL,
    parent TEXT COLLATE "C" NOT NULL DEFAULT '',
    body TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (kind, vault, key)
);
CREATE INDEX docs_parent ON docs(kind, vault, parent);
CREATE SEQUENCE job_seq;
CREATE TABLE jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    vault TEXT COLLATE "C" NOT NULL,
    seq BIGINT NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    operation TEXT COLLATE "C" NOT NULL,
    bmt TEXT COLLATE "C" NOT NULL,
    start_time TEXT COLLATE "C" NOT NULL,
    item TEXT COLLATE "C" NOT NULL DEFAULT '',
    body TEXT COLLATE "C" NOT NULL,
    -- 'queued', 'running' or 'done'
    queue TEXT COLLATE "C" NOT NULL DEFAULT 'done',
    -- needs the vault to itself (deleting backup data, garbage collection, verification)
    exclusive BOOLEAN NOT NULL DEFAULT false,
    attempt BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT COLLATE "C",
    lease_expires_at TEXT COLLATE "C",
    -- what the claiming node must offer ('' = any node): item:<key> or root:<path>
    needs TEXT COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX jobs_vault_time ON jobs(vault, start_time DESC, seq DESC);
CREATE INDEX jobs_status ON jobs(status);
CREATE INDEX jobs_item ON jobs(vault, item, status);
CREATE INDEX jobs_vault_status_time ON jobs(vault, status, start_time DESC, seq DESC);
CREATE INDEX jobs_vault_op_time ON jobs(vault, operation, start_time DESC, seq DESC);
CREATE INDEX jobs_start ON jobs(start_time);
CREATE INDEX jobs_queue ON jobs(queue, seq);
CREATE TABLE leases (
    name TEXT COLLATE "C" PRIMARY KEY,
    owner TEXT COLLATE "C" NOT NULL,
    until TEXT COLLATE "C" NOT NULL
);
CREATE TABLE schedule_runs (
    vault TEXT COLLATE "C" NOT NULL,
    item TEXT COLLATE "C" NOT NULL,
    slot TEXT COLLATE "C" NOT NULL,
    job_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (vault, item, slot)
);
CREATE TABLE nodes (
    id TEXT COLLATE "C" PRIMARY KEY,
    sources TEXT NOT NULL,
    last_seen TEXT COLLATE "C" NOT NULL
);
CREATE TABLE node_offers (
    node TEXT COLLATE "C" NOT NULL,
    offer TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (offer, node)
);
