-- Who changed what, when and from where: written in the transaction of the change.

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,            -- the token's name, or anonymous / system
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    selector    TEXT,                     -- for deployment changes, to filter by
    remote_addr TEXT,
    details     TEXT NOT NULL             -- JSON
);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_selector ON audit_log (selector, id);

-- The token that asked for an upload becomes the version's uploader.
ALTER TABLE uploads ADD COLUMN created_by TEXT;
