-- The lock protocol gets a version that the binary and the database compare (`verify()`).
--
-- How appends order themselves is shared between the migrations (`append_events`, `append_batch`) and statements
-- the binary sends itself (the single-event fast paths of `append_one.rs` and `append_next.rs`): the stream
-- lock's two keys (hashtext(<schema>), hashtext(<stream>)), the gap marker's layout (schema_tag() << 48 | the
-- last position drawn) and the order they are taken in (stream lock, gap marker, nextval). A binary and a database
-- that disagree on it break the ordering guarantee silently, so the protocol has a number: `lock_protocol()`
-- returns it, and the binary refuses a database whose number is not its own, naming both.
--
-- Protocol 2 (this migration): every append of an event at a stream version takes that stream's lock first,
-- including the single-event append after a command's read, which in protocol 1 relied on the unique key
-- alone (so `append_events`' version read was not final beside it, and `Any` could answer `Conflict`), and
-- writes version n + 1 only if version n is stored, in the same statement. A database without the function
-- speaks protocol 1. A binary older than this migration refuses this schema at `migrate()` (sqlx reports the
-- applied migration it does not know).
DO $migration$
BEGIN
    EXECUTE format(
        'CREATE OR REPLACE FUNCTION %I.lock_protocol() RETURNS integer LANGUAGE sql IMMUTABLE AS $$ SELECT 2 $$',
        current_schema());
END
$migration$;
