-- Durable timers and parked inputs of process managers (crate `annals-process`, feature `sqlite`), beside the
-- events in the store's file so they share its backups and lifetime; the same rows as PostgreSQL's
-- `process_timers` (migrations 0006 and 0012 there) and `process_parked`.
-- Times are microseconds since the Unix epoch, UTC: every due time of `timer_due_range` (1970 to 9999) fits.
CREATE TABLE process_timers (
    process        TEXT    NOT NULL,
    instance       TEXT    NOT NULL,
    timer_key      TEXT    NOT NULL,
    -- One scheduling of the timer (it changes when the timer is scheduled again): the UUID as text.
    fire_id        TEXT    NOT NULL,
    due_at         INTEGER NOT NULL,
    -- JSON text.
    payload        TEXT    NOT NULL CHECK (json_valid(payload)),
    correlation_id TEXT,
    -- A poller that claimed the timer owns it until then; NULL when unclaimed.
    claimed_until  INTEGER,
    -- How many times it was claimed; past the process's limit it is parked (never claimed again).
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    PRIMARY KEY (process, instance, timer_key)
) STRICT;

-- The due-timer poll (claim the due timers, then find when the next one is due) orders and bounds by when a timer
-- may next be claimed: its due time, or the end of its claim when that is later. The statements of
-- `annals-process` spell this expression exactly so, and read the index as a range.
CREATE INDEX process_timers_wake ON process_timers (process, max(due_at, coalesce(claimed_until, due_at)));

CREATE TABLE process_parked (
    process    TEXT    NOT NULL,
    -- The event's position in the log.
    position   INTEGER NOT NULL,
    -- The instance it was routed to; NULL when routing it failed.
    instance   TEXT,
    stream_id  TEXT    NOT NULL,
    event_type TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 1,
    -- Microseconds since the Unix epoch, UTC.
    parked_at  INTEGER NOT NULL,
    PRIMARY KEY (process, position)
) STRICT;

-- "Is this instance parked?", asked for every input the runner handles: an index range scan.
CREATE INDEX process_parked_instance ON process_parked (process, instance, position);
