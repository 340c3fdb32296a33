-- The activity log (Azure Monitor's eventtypes/management/values), as SQLite's 0005: one row per
-- event, read newest first per subscription within a time window, deleted past the retention.
CREATE TABLE activity (
    id TEXT COLLATE "C" PRIMARY KEY,
    sub TEXT COLLATE "C" NOT NULL,
    ts TEXT COLLATE "C" NOT NULL,
    body TEXT COLLATE "C" NOT NULL
);
CREATE INDEX activity_sub_ts ON activity(sub, ts DESC, id DESC);
CREATE INDEX activity_ts ON activity(ts);
