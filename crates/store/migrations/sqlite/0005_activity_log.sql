-- The activity log (Azure Monitor's eventtypes/management/values): one row per event, read
-- newest first per subscription within a time window, deleted past the retention.
CREATE TABLE activity (
    id TEXT PRIMARY KEY,
    sub TEXT NOT NULL,
    ts TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX activity_sub_ts ON activity(sub, ts DESC, id DESC);
CREATE INDEX activity_ts ON activity(ts);
