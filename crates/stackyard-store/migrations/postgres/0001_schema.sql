-- The whole schema, as SQLite has it after its migrations, so that one set
-- of statements serves both. Times are RFC 3339 text in UTC with nanoseconds
-- (fixed width: text order is time order); JSON documents are text; every
-- integer is BIGINT.

CREATE TABLE uploads (
    upload_id    TEXT PRIMARY KEY,
    method       TEXT NOT NULL,
    filename     TEXT,
    min_size     BIGINT NOT NULL,
    max_size     BIGINT NOT NULL,
    sha256       TEXT,
    labels       TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    claimed_at   TEXT,                    -- set once, when processing starts
    state        TEXT NOT NULL CHECK (state IN ('pending', 'registered', 'rejected')),
    artifact_key TEXT,
    version      BIGINT,
    digest       TEXT,
    created      BIGINT,                  -- 1 when the upload made a new version
    error        TEXT,                    -- JSON problem document
    created_by   TEXT,
    direct       BIGINT NOT NULL DEFAULT 0 -- 1: sent to the object store directly
);
CREATE INDEX uploads_pending_direct ON uploads (created_at) WHERE direct = 1 AND state = 'pending';

CREATE TABLE artifacts (
    artifact_key   TEXT PRIMARY KEY,
    stack_name     TEXT NOT NULL,
    next_version   BIGINT NOT NULL,       -- never reused, even after a delete
    latest_version BIGINT,                -- NULL while no version exists
    version_count  BIGINT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE TABLE artifact_versions (
    artifact_key TEXT NOT NULL REFERENCES artifacts (artifact_key),
    version      BIGINT NOT NULL,
    digest       TEXT NOT NULL UNIQUE,
    size         BIGINT NOT NULL,
    format       TEXT NOT NULL,
    stack_name   TEXT NOT NULL,
    depends_on   TEXT NOT NULL,
    manifest     TEXT NOT NULL,
    labels       TEXT NOT NULL,
    uploaded_at  TEXT NOT NULL,
    uploaded_by  TEXT,
    PRIMARY KEY (artifact_key, version)
);

CREATE TABLE version_labels (
    artifact_key TEXT NOT NULL,
    version      BIGINT NOT NULL,
    name         TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (artifact_key, version, name),
    FOREIGN KEY (artifact_key, version) REFERENCES artifact_versions (artifact_key, version) ON DELETE CASCADE
);
CREATE INDEX version_labels_by_label ON version_labels (name, value);

CREATE TABLE version_dependencies (
    artifact_key TEXT NOT NULL,
    version      BIGINT NOT NULL,
    dependency   TEXT NOT NULL,
    PRIMARY KEY (artifact_key, version, dependency),
    FOREIGN KEY (artifact_key, version) REFERENCES artifact_versions (artifact_key, version) ON DELETE CASCADE
);
CREATE INDEX version_dependencies_by_dependency ON version_dependencies (dependency);

CREATE TABLE deployments (
    selector         TEXT PRIMARY KEY,
    organization     TEXT,
    current_revision BIGINT,               -- NULL once deleted; history stays
    last_revision    BIGINT NOT NULL,      -- numbering continues after a delete
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX deployments_by_organization ON deployments (organization, selector)
    WHERE current_revision IS NOT NULL;

CREATE TABLE revisions (
    selector     TEXT NOT NULL,
    revision     BIGINT NOT NULL,
    status_id    TEXT NOT NULL UNIQUE,
    organization TEXT,
    artifacts    TEXT NOT NULL,
    diff         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    created_by   TEXT,
    PRIMARY KEY (selector, revision)
);

CREATE TABLE current_plan_artifacts (
    artifact_key TEXT NOT NULL,
    selector     TEXT NOT NULL,
    version      BIGINT NOT NULL,
    PRIMARY KEY (artifact_key, selector)
);
CREATE INDEX current_plan_artifacts_by_selector ON current_plan_artifacts (selector);

CREATE TABLE artifact_status (
    status_id    TEXT NOT NULL,
    artifact_key TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'in_progress', 'succeeded', 'failed')),
    message      TEXT,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (status_id, artifact_key)
);

-- The outbox. Ids become visible in increasing order: writers hold an
-- advisory lock from their insert to their commit.
CREATE TABLE events (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type     TEXT NOT NULL,
    at       TEXT NOT NULL,
    selector TEXT NOT NULL,
    data     TEXT NOT NULL
);

CREATE TABLE sink_positions (
    sink             TEXT PRIMARY KEY,
    last_event_id    BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at TEXT
);

CREATE TABLE tokens (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    organizations TEXT NOT NULL,
    selectors     TEXT NOT NULL,
    secret_hash   TEXT NOT NULL UNIQUE,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    last_used_at  TEXT,
    revoked_at    TEXT
);

CREATE TABLE audit_log (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    selector    TEXT,
    remote_addr TEXT,
    details     TEXT NOT NULL
);
CREATE INDEX audit_log_by_actor ON audit_log (actor, id);
CREATE INDEX audit_log_by_selector ON audit_log (selector, id);
