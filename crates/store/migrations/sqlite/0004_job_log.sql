-- Each job's log (issue #13): numbered lines, bounded per job by the writer (it keeps the first
-- lines and the newest ones), deleted with the job.
CREATE TABLE job_log (
    job_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    t TEXT NOT NULL,
    level TEXT NOT NULL,
    msg TEXT NOT NULL,
    PRIMARY KEY (job_id, n)
);
