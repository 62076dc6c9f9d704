-- Durable timers of process managers (crate `annals-process`): "wake instance I of process P at T with this
-- payload". Stored beside the events, in the store's schema, so they share its backups, tenancy and lifetime.
-- A row is one pending timer; firing it deletes it. `fire_id` identifies one scheduling of the timer (it changes
-- when the timer is scheduled again), so completing a firing never deletes a newer scheduling.
CREATE TABLE process_timers (
    process        text        COLLATE "C" NOT NULL,
    instance       text        COLLATE "C" NOT NULL,
    timer_key      text        COLLATE "C" NOT NULL,
    fire_id        uuid        NOT NULL,
    due_at         timestamptz NOT NULL,
    payload        jsonb       NOT NULL,
    correlation_id text,
    -- A poller that claimed the timer owns it until then; NULL when unclaimed.
    claimed_until  timestamptz,
    -- How many times it was claimed; past the process's limit it is parked (never claimed again).
    attempts       integer     NOT NULL DEFAULT 0,
    last_error     text,
    CONSTRAINT process_timers_pkey PRIMARY KEY (process, instance, timer_key)
);

-- The polling path: due timers of one process, earliest first, read through a bounded index range scan.
CREATE INDEX process_timers_due ON process_timers (process, due_at);
