-- The store's tables: one per kind of value, as sled has one tree per kind. Values are the same
-- JSON bytes sled keeps (bytea: a snapshot is compared byte for byte, and jsonb would reorder it);
-- the columns beside them are what queries select and order by.

CREATE TABLE meta (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE checkpoints (
    clinic   text NOT NULL,
    resource text NOT NULL,
    value    bytea NOT NULL,
    PRIMARY KEY (clinic, resource)
);

CREATE TABLE poll_status (
    clinic   text NOT NULL,
    resource text NOT NULL,
    value    bytea NOT NULL,
    PRIMARY KEY (clinic, resource)
);

CREATE TABLE baselines (
    clinic   text NOT NULL,
    resource text NOT NULL,
    value    bytea NOT NULL,
    PRIMARY KEY (clinic, resource)
);

CREATE TABLE snapshots (
    clinic    text NOT NULL,
    resource  text NOT NULL,
    record_id text NOT NULL,
    value     bytea NOT NULL,
    PRIMARY KEY (clinic, resource, record_id)
);

CREATE TABLE baseline_snapshots (
    clinic    text NOT NULL,
    resource  text NOT NULL,
    record_id text NOT NULL,
    value     bytea NOT NULL,
    PRIMARY KEY (clinic, resource, record_id)
);

CREATE TABLE journal (
    seq         bigint PRIMARY KEY,
    clinic      text NOT NULL,
    resource    text NOT NULL,
    record_id   text NOT NULL,
    detected_at timestamptz NOT NULL,
    value       bytea NOT NULL
);
CREATE INDEX journal_detected ON journal (detected_at);
CREATE INDEX journal_record ON journal (clinic, resource, record_id);

-- A queued delivery. `claimed_by`/`claimed_until`: the replica attempting it, until when; an
-- expired claim is free again (its replica died mid-attempt).
CREATE TABLE outbox (
    destination     text NOT NULL,
    seq             bigint NOT NULL,
    clinic          text NOT NULL,
    resource        text NOT NULL,
    record_id       text NOT NULL,
    attempts        integer NOT NULL,
    next_attempt_ms bigint NOT NULL,
    claimed_by      text,
    claimed_until   timestamptz,
    value           bytea NOT NULL,
    PRIMARY KEY (destination, seq)
);
CREATE INDEX outbox_record ON outbox (clinic, resource, record_id);

CREATE TABLE attempts (
    seq     bigint NOT NULL,
    attempt integer NOT NULL,
    value   bytea NOT NULL,
    PRIMARY KEY (seq, attempt)
);

CREATE TABLE dead (
    seq         bigint PRIMARY KEY,
    destination text NOT NULL,
    clinic      text NOT NULL,
    resource    text NOT NULL,
    record_id   text NOT NULL,
    died_ms     bigint NOT NULL,
    value       bytea NOT NULL
);
CREATE INDEX dead_record ON dead (clinic, resource, record_id);

CREATE TABLE dest_health (
    destination text PRIMARY KEY,
    value       bytea NOT NULL
);

-- Ids (journal and delivery sequence numbers) are handed out in blocks: one round trip per block.
CREATE SEQUENCE ids INCREMENT BY 1000 MINVALUE 1 START WITH 1;

-- Which replica polls which clinic, until when (the database's clock decides expiry).
CREATE TABLE leases (
    clinic     text PRIMARY KEY,
    owner      text NOT NULL,
    expires_at timestamptz NOT NULL
);

-- The replicas alive: each renews its row with its leases; a fair share is counted from them.
CREATE TABLE replicas (
    id      text PRIMARY KEY,
    seen_at timestamptz NOT NULL
);
