-- API tokens. Only a SHA-256 of each secret is kept.

CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    organizations TEXT NOT NULL,   -- JSON array; empty: any
    selectors     TEXT NOT NULL,   -- JSON array of globs; empty: any
    secret_hash   TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT,
    revoked_at    TEXT
);
