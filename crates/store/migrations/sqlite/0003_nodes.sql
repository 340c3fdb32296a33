-- Nodes and what they offer: a job that needs a source or a restore root (`needs`) is claimed
-- only by a node that offers it, and every node serves the sources of the live ones. Jobs from
-- before need nothing (one SQLite node ran them).
ALTER TABLE jobs ADD COLUMN needs TEXT NOT NULL DEFAULT '';
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    sources TEXT NOT NULL,
    last_seen TEXT NOT NULL
);
CREATE TABLE node_offers (
    node TEXT NOT NULL,
    offer TEXT NOT NULL,
    PRIMARY KEY (offer, node)
);
