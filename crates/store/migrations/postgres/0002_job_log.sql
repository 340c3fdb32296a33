-- Each job's log (issue #13; SQLite 0004): numbered lines, bounded per job by the writer (it
-- keeps the first lines and the newest ones), deleted with the job.
CREATE TABLE job_log (
    job_id TEXT COLLATE "C" NOT NULL,
    n BIGINT NOT NULL,
    t TEXT COLLATE "C" NOT NULL,
    level TEXT COLLATE "C" NOT NULL,
    msg TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
);
