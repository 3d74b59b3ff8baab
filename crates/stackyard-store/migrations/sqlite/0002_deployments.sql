-- Deployments, their immutable revisions, rollout status and the event outbox.

CREATE TABLE deployments (
    selector         TEXT PRIMARY KEY,
    organization     TEXT,
    current_revision INTEGER,              -- NULL once deleted; history stays
    last_revision    INTEGER NOT NULL,     -- numbering continues after a delete
    created_at       TEXT NOT NULL,        -- of the current incarnation
    updated_at       TEXT NOT NULL
);
CREATE INDEX deployments_by_organization ON deployments (organization, selector)
    WHERE current_revision IS NOT NULL;

CREATE TABLE revisions (
    selector     TEXT NOT NULL,
    revision     INTEGER NOT NULL,
    status_id    TEXT NOT NULL UNIQUE,
    organization TEXT,
    artifacts    TEXT NOT NULL,            -- JSON: the validated plan, by wave
    diff         TEXT NOT NULL,            -- JSON: against the previous revision
    created_at   TEXT NOT NULL,
    created_by   TEXT,
    PRIMARY KEY (selector, revision)
);

-- The reverse index of current plans: which selectors deploy a key, and at
-- which version. Queries by artifact key and the "version in use" check
-- read it instead of scanning plans.
CREATE TABLE current_plan_artifacts (
    artifact_key TEXT NOT NULL,
    selector     TEXT NOT NULL,
    version      INTEGER NOT NULL,
    PRIMARY KEY (artifact_key, selector)
);
CREATE INDEX current_plan_artifacts_by_selector ON current_plan_artifacts (selector);

-- Reported rollout state; an artifact without a row is pending.
CREATE TABLE artifact_status (
    status_id    TEXT NOT NULL,
    artifact_key TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'in_progress', 'succeeded', 'failed')),
    message      TEXT,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (status_id, artifact_key)
);

-- The outbox: written in the transaction of the change it describes.
CREATE TABLE events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    type     TEXT NOT NULL,
    at       TEXT NOT NULL,
    selector TEXT NOT NULL,
    data     TEXT NOT NULL
);

-- How far each sink has been delivered.
CREATE TABLE sink_positions (
    sink          TEXT PRIMARY KEY,
    last_event_id INTEGER NOT NULL
);
