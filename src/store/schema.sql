-- lifeline history store, schema version 1 (PRAGMA user_version = 1).
-- Times are milliseconds since the Unix epoch (UTC).
-- Status codes (samples.status): 0 unknown, 1 connecting, 2 healthy, 3 degraded,
-- 4 unhealthy, 5 disconnected. Transitions and check_state keep the status names.
-- Other tables in this file (the alert outbox) belong to other parts of lifeline.

CREATE TABLE IF NOT EXISTS checks (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- One row per recorded result (downsampled per history.sample_every).
CREATE TABLE IF NOT EXISTS samples (
    check_id   INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    status     INTEGER NOT NULL,
    latency_us INTEGER
);
CREATE INDEX IF NOT EXISTS samples_by_check ON samples (check_id, at);

-- Every status change.
CREATE TABLE IF NOT EXISTS transitions (
    check_id        INTEGER NOT NULL,
    at              INTEGER NOT NULL,
    status          TEXT NOT NULL,
    previous_status TEXT NOT NULL,
    error_kind      TEXT,
    message         TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS transitions_by_check ON transitions (check_id, at);

-- The last known state of every check, restored when the agent starts.
CREATE TABLE IF NOT EXISTS check_state (
    check_id             INTEGER PRIMARY KEY,
    status               TEXT NOT NULL,
    score                INTEGER,
    consecutive_failures INTEGER NOT NULL,
    last_success_at      INTEGER,
    since                INTEGER,
    error_kind           TEXT,
    message              TEXT NOT NULL DEFAULT '',
    updated_at           INTEGER NOT NULL
);

-- Agent runs: uptime reports time outside every run as agent downtime. A run that ended
-- without a clean stop (kill -9, power loss) ends at its last heartbeat.
CREATE TABLE IF NOT EXISTS agent_runs (
    id         INTEGER PRIMARY KEY,
    started_at INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    stopped_at INTEGER
);

-- For people with the sqlite3 shell.
CREATE VIEW IF NOT EXISTS samples_view AS
    SELECT c.name AS check_name,
           strftime('%Y-%m-%dT%H:%M:%fZ', s.at / 1000.0, 'unixepoch') AS at,
           CASE s.status WHEN 0 THEN 'unknown' WHEN 1 THEN 'connecting' WHEN 2 THEN 'healthy'
                         WHEN 3 THEN 'degraded' WHEN 4 THEN 'unhealthy' ELSE 'disconnected' END AS status,
           s.latency_us / 1000.0 AS latency_ms
    FROM samples s JOIN checks c ON c.id = s.check_id;
