-- The job queue lives in the store: which jobs wait, which run where, under which lease and
-- attempt. `queue` is 'queued', 'running' or 'done'; `exclusive` marks jobs that need the vault
-- to themselves (deleting backup data, garbage collection, verification).
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'done';
ALTER TABLE jobs ADD COLUMN exclusive INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_at TEXT;
UPDATE jobs SET queue = CASE
    WHEN status NOT IN ('InProgress', 'Cancelling') THEN 'done'
    WHEN json_extract(body, '$.started') THEN 'running'
    ELSE 'queued' END;
UPDATE jobs SET exclusive = 1
    WHERE json_extract(body, '$.work.type') IN ('DeleteData', 'GarbageCollection', 'Verify');
CREATE INDEX jobs_queue ON jobs(queue, seq);
