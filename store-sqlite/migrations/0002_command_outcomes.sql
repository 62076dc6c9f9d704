-- The command record: outcomes of command ids that appended nothing (refusals, no-change decisions), so that a
-- repeat of the command id gets the original answer (annals::EventStore::record_command). Outcomes with events
-- need no row: their events carry ids derived from the command id. Rows may be deleted after a retention period
-- (SqliteStore::forget_commands_recorded_before); nothing else reads or writes this table.
CREATE TABLE command_outcomes (
    command_id     TEXT    PRIMARY KEY,
    stream_id      TEXT    NOT NULL,
    stream_version INTEGER NOT NULL CHECK (stream_version >= 0),
    position       INTEGER NOT NULL CHECK (position >= 0),
    outcome        TEXT    NOT NULL CHECK (outcome IN ('refused', 'unchanged')),
    reason         TEXT,
    -- Microseconds since the Unix epoch, UTC.
    recorded_at    INTEGER NOT NULL,
    CHECK ((outcome = 'refused') = (reason IS NOT NULL))
) STRICT, WITHOUT ROWID;

CREATE INDEX command_outcomes_recorded_at ON command_outcomes (recorded_at);
