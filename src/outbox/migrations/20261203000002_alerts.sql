-- Operator alerts (`alerts:`): each destination's run of failed attempts since its last success,
-- and the state of each incident (open or not, when its last alert went out), so that an alert
-- is sent once per incident across restarts and replicas.

CREATE TABLE dest_streaks (
    destination text PRIMARY KEY,
    since_ms    bigint NOT NULL,
    failures    bigint NOT NULL,
    reason      text NOT NULL
);

CREATE TABLE incidents (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);
