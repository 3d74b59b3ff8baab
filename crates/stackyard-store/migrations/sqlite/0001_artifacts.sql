-- Uploads, artifacts and their immutable versions.

CREATE TABLE uploads (
    upload_id    TEXT PRIMARY KEY,
    method       TEXT NOT NULL,
    filename     TEXT,
    min_size     INTEGER NOT NULL,
    max_size     INTEGER NOT NULL,
    sha256       TEXT,
    labels       TEXT NOT NULL,           -- JSON object
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    claimed_at   TEXT,                    -- set once, when the bytes start arriving
    state        TEXT NOT NULL CHECK (state IN ('pending', 'registered', 'rejected')),
    artifact_key TEXT,
    version      INTEGER,
    digest       TEXT,
    created      INTEGER,                 -- 1 when the upload made a new version
    error        TEXT                     -- JSON problem document
);

CREATE TABLE artifacts (
    artifact_key   TEXT PRIMARY KEY,
    stack_name     TEXT NOT NULL,
    -- Version numbers are never reused, even after a delete, so `key@3`
    -- always names the same bytes.
    next_version   INTEGER NOT NULL,
    latest_version INTEGER,               -- NULL while no version exists
    version_count  INTEGER NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE artifact_versions (
    artifact_key TEXT NOT NULL REFERENCES artifacts (artifact_key),
    version      INTEGER NOT NULL,
    digest       TEXT NOT NULL UNIQUE,
    size         INTEGER NOT NULL,
    format       TEXT NOT NULL,
    stack_name   TEXT NOT NULL,
    depends_on   TEXT NOT NULL,           -- JSON array of artifact keys
    manifest     TEXT NOT NULL,           -- JSON, as uploaded
    labels       TEXT NOT NULL,           -- JSON object
    uploaded_at  TEXT NOT NULL,
    uploaded_by  TEXT,
    PRIMARY KEY (artifact_key, version)
);

-- Label filters on listings look up the latest version's labels.
CREATE TABLE version_labels (
    artifact_key TEXT NOT NULL,
    version      INTEGER NOT NULL,
    name         TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (artifact_key, version, name),
    FOREIGN KEY (artifact_key, version) REFERENCES artifact_versions (artifact_key, version) ON DELETE CASCADE
);
CREATE INDEX version_labels_by_label ON version_labels (name, value);

-- The reverse dependency index: which versions depend on a key.
CREATE TABLE version_dependencies (
    artifact_key TEXT NOT NULL,
    version      INTEGER NOT NULL,
    dependency   TEXT NOT NULL,
    PRIMARY KEY (artifact_key, version, dependency),
    FOREIGN KEY (artifact_key, version) REFERENCES artifact_versions (artifact_key, version) ON DELETE CASCADE
);
CREATE INDEX version_dependencies_by_dependency ON version_dependencies (dependency);
