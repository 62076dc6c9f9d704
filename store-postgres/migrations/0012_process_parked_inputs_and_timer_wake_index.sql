-- Parked inputs of process managers (crate `annals-process`): an event of the log whose handling failed
-- permanently (a decision that breaks the rules, a due time no timer store keeps, an event that does not decode)
-- is set aside here with its reason, so that one instance never blocks the others. Later inputs of the same
-- instance are parked behind it, so an instance's inputs are still handled in order. An operator retries them
-- with `Process::retry_parked`; a handled input's row is deleted.
CREATE TABLE process_parked (
    process    text        COLLATE "C" NOT NULL,
    -- The event's position in the log.
    position   bigint      NOT NULL,
    -- The instance it was routed to; NULL when routing it failed.
    instance   text        COLLATE "C",
    stream_id  text        NOT NULL,
    event_type text        NOT NULL,
    reason     text        NOT NULL,
    attempts   integer     NOT NULL DEFAULT 1,
    parked_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT process_parked_pkey PRIMARY KEY (process, position)
);

-- "Is this instance parked?", asked for every input the runner handles: an index range scan.
CREATE INDEX process_parked_instance ON process_parked (process, instance, position);

-- The due-timer poll (claim the due timers, then find when the next one is due) orders and bounds by when a timer
-- may next be claimed: its due time, or the end of its claim when that is later. Both statements read this index
-- as a range, so a poll never reads the whole table; the index on due time alone served neither the claim's
-- condition on claims nor the next due time (a min() over an expression: a sequential scan every poll).
CREATE INDEX process_timers_wake ON process_timers (process, (greatest(due_at, coalesce(claimed_until, due_at))));
DROP INDEX process_timers_due;
