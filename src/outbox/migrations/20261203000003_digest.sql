-- Changes waiting in digests: a delivery to a destination with `digest:` is a row here instead of
-- an outbox entry, written in the page's transaction; a closed window deletes its rows and inserts
-- one outbox entry in one transaction (the delete must find every row, or the flush rolls back:
-- another replica took them). The value is the same JSON sled keeps (a DigestMember); the
-- columns beside it are what the flush, `status` and `purge` select by.
CREATE TABLE digest_members (
    destination text NOT NULL,
    seq         bigint NOT NULL,
    clinic      text NOT NULL,
    recipient   text NOT NULL,
    resource    text NOT NULL,
    record_id   text NOT NULL,
    created_ms  bigint NOT NULL,
    value       bytea NOT NULL,
    PRIMARY KEY (destination, seq)
);
CREATE INDEX digest_members_record ON digest_members (clinic, resource, record_id);
