-- The command record: outcomes of command ids that appended nothing (refusals, no-change decisions), so a repeat
-- of the command id gets the original answer (annals::EventStore::record_command). Outcomes with events need no
-- row: their events carry ids derived from the command id. Rows may be deleted after a retention period
-- (PostgresStore::forget_commands_recorded_before); nothing else reads or writes this table.
CREATE TABLE command_outcomes (
    command_id     text        COLLATE "C" PRIMARY KEY,
    stream_id      text        COLLATE "C" NOT NULL,
    stream_version bigint      NOT NULL CHECK (stream_version >= 0),
    position       bigint      NOT NULL CHECK (position >= 0),
    outcome        text        NOT NULL CHECK (outcome IN ('refused', 'unchanged')),
    reason         text,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((outcome = 'refused') = (reason IS NOT NULL))
);

CREATE INDEX command_outcomes_recorded_at ON command_outcomes (recorded_at);
