-- The event store: one events table, its position sequence, and the three functions that every append and
-- every global read go through. `PostgresStore::migrate` runs this with `search_path` set to the store's schema,
-- so every name below lands in that schema; the functions pin their own `search_path` at the end.
-- The global-order design is ADR 0001 (docs/adr/0001-gap-safe-global-order.md).

-- Positions. CACHE 1 is required: an appender's gap marker promises that every position it draws is greater
-- than the last value it read, which a per-session cache would break. The maximum keeps a position within the
-- 48 bits the gap marker has for it.
CREATE SEQUENCE events_position_seq AS bigint MINVALUE 1 MAXVALUE 281474976710655 CACHE 1 NO CYCLE;

CREATE TABLE events (
    position       bigint      NOT NULL,
    stream_version bigint      NOT NULL,
    event_id       uuid        NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    schema_version integer     NOT NULL,
    stream_id      text        COLLATE "C" NOT NULL,
    event_type     text        NOT NULL,
    payload        jsonb       NOT NULL,
    -- NULL when the event has no metadata.
    metadata       jsonb,
    -- The global read path.
    CONSTRAINT events_pkey PRIMARY KEY (position),
    -- The stream read path, and the last line of defence for optimistic concurrency.
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version),
    -- Idempotent appends.
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

ALTER SEQUENCE events_position_seq OWNED BY events.position;

-- Appends a batch to one stream in one call. Returns one row:
--   outcome 0: appended; stream_version is the new version, first/last_position the positions drawn.
--   outcome 1: expected version mismatch; stream_version is the current version.
--   outcome 2: some event ids are already stored; the caller resolves the replay; stream_version is current.
-- p_expected: >= 0 exact version (0 = no stream), -1 any version, -2 stream exists.
-- p_check_ids: look for stored event ids before inserting, so that a replay is reported as outcome 2 instead of
-- a unique violation that would abort the caller's transaction.
-- p_notify_channel: when not NULL, NOTIFY this channel; PostgreSQL delivers it only if the transaction commits.
-- Used for appends inside a caller's transaction; the store's own appends notify after committing instead.
CREATE FUNCTION append_events(
    p_stream          text,
    p_expected        bigint,
    p_check_ids       boolean,
    p_ids             uuid[],
    p_types           text[],
    p_schema_versions integer[],
    p_payloads        jsonb[],
    p_metadata        jsonb[],
    p_notify_channel  text,
    OUT o_outcome        smallint,
    OUT o_stream_version bigint,
    OUT o_first_position bigint,
    OUT o_last_position  bigint
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_schema  integer := hashtext(current_schema());
    v_current bigint;
    v_low     bigint;
BEGIN
    -- Serialize appends per stream (a hash collision only serializes two streams). Taken first, so that an
    -- append waiting here holds no gap marker.
    PERFORM pg_advisory_xact_lock(v_schema, hashtext(p_stream));
    -- A new statement, so a new snapshot: it sees every append that held the lock before us.
    SELECT coalesce(max(e.stream_version), 0) INTO v_current FROM events e WHERE e.stream_id = p_stream;
    o_stream_version := v_current;

    IF NOT (p_expected = -1 OR (p_expected = -2 AND v_current > 0) OR p_expected = v_current) THEN
        o_outcome := CASE WHEN EXISTS (SELECT 1 FROM events e WHERE e.event_id = ANY (p_ids)) THEN 2 ELSE 1 END;
        RETURN;
    END IF;
    IF p_check_ids AND EXISTS (SELECT 1 FROM events e WHERE e.event_id = ANY (p_ids)) THEN
        o_outcome := 2;
        RETURN;
    END IF;

    -- The gap marker: a shared transaction lock whose key is this schema's tag (15 bits of the schema name's
    -- hash; a collision can only hold readers back, never let them skip) and the last position drawn so far. Every
    -- position this transaction draws below is greater than v_low, and readers see the lock from now until the
    -- transaction has ended (committed rows visible, or rolled back).
    v_low := coalesce(pg_sequence_last_value('events_position_seq'::regclass), 0);
    PERFORM pg_advisory_xact_lock_shared(((v_schema & 32767)::bigint << 48) | v_low);

    INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
    SELECT nextval('events_position_seq'), p_stream, v_current + u.ord, u.id, u.ty, u.sv, u.pl, u.md
    FROM unnest(p_ids, p_types, p_schema_versions, p_payloads, p_metadata) WITH ORDINALITY AS u(id, ty, sv, pl, md, ord);

    o_outcome := 0;
    o_stream_version := v_current + cardinality(p_ids);
    o_last_position := currval('events_position_seq');
    IF cardinality(p_ids) = 1 THEN
        o_first_position := o_last_position;
    ELSE
        -- Positions are drawn in row order (other appends may interleave); the first is found by the stream index.
        SELECT e.position INTO o_first_position FROM events e
         WHERE e.stream_id = p_stream AND e.stream_version = v_current + 1;
    END IF;
    IF p_notify_channel IS NOT NULL THEN
        PERFORM pg_notify(p_notify_channel, '');
    END IF;
END
$$;

-- The highest position a reader may go up to now: no transaction that could still commit an event at or below
-- it is in flight. Three steps, in this order, each its own statement:
--   1. L: the last position drawn from the sequence (read under the sequence's buffer lock).
--   2. M: the lowest gap marker held (or awaited) in this database with this schema's tag.
--   3. The caller then reads rows <= min(L, M) in a NEW statement, whose snapshot is taken after step 2.
-- A position p <= L was drawn before step 1 by a transaction that took its marker (<= p - 1) before drawing.
-- If that transaction was still in flight at step 2, M < p and p is not read; if it had ended, its rows are
-- committed (visible to step 3's snapshot) or rolled back (never there). Other transactions take no marker.
CREATE FUNCTION safe_position() RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_last bigint;
    v_low  bigint;
    v_tag  bigint := hashtext(current_schema()) & 32767;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'annals: the global event order must be read at READ COMMITTED isolation, not %',
            current_setting('transaction_isolation')
            USING ERRCODE = '25000',
                  HINT = 'Read through a connection whose default_transaction_isolation is read committed.';
    END IF;
    v_last := coalesce(pg_sequence_last_value('events_position_seq'::regclass), 0);
    SELECT min(((l.classid::bigint & 65535) << 32) | l.objid::bigint) INTO v_low
      FROM pg_locks l
     WHERE l.locktype = 'advisory'
       AND l.objsubid = 1
       AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())
       AND (l.classid::bigint >> 16) = v_tag;
    RETURN least(v_last, v_low);
END
$$;

-- One page of the global order: events after p_after, up to the safe position, in position order.
CREATE FUNCTION read_all(p_after bigint, p_limit bigint) RETURNS SETOF events
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_bound bigint := safe_position();
BEGIN
    RETURN QUERY
        SELECT * FROM events e
         WHERE e.position > p_after AND e.position <= v_bound
         ORDER BY e.position
         LIMIT p_limit;
END
$$;

-- The last position `read_all` would return now (0 for none).
CREATE FUNCTION head_position() RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_bound bigint := safe_position();
BEGIN
    RETURN coalesce((SELECT max(e.position) FROM events e WHERE e.position <= v_bound), 0);
END
$$;

-- Waits until the oldest append still in flight in this schema has ended (committed or rolled back), for at most
-- p_timeout_ms; returns false at once when none is in flight. Used by waiters that are held back below an open
-- append, so that they learn about a rollback (which sends no notification) at once. It waits by asking for the
-- stream lock of the backend holding the lowest gap marker, in shared mode: appenders of that stream wait for the
-- open append anyway, so this delays nobody. A lock timeout (SQLSTATE 55P03) means the append is still open.
CREATE FUNCTION await_oldest_append(p_timeout_ms bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_tag    bigint := hashtext(current_schema()) & 32767;
    v_stream bigint := hashtext(current_schema())::bigint & 4294967295;
    v_db     oid := (SELECT d.oid FROM pg_database d WHERE d.datname = current_database());
    v_pid    integer;
    v_key    bigint;
BEGIN
    SELECT l.pid INTO v_pid
      FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.database = v_db AND l.granted
       AND (l.classid::bigint >> 16) = v_tag AND l.pid IS NOT NULL
     ORDER BY ((l.classid::bigint & 65535) << 32) | l.objid::bigint
     LIMIT 1;
    IF v_pid IS NULL THEN
        RETURN false;
    END IF;
    SELECT l.objid::bigint INTO v_key
      FROM pg_locks l
     WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.database = v_db AND l.granted
       AND l.pid = v_pid AND l.classid::bigint = v_stream
     LIMIT 1;
    IF v_key IS NULL THEN
        RETURN false;
    END IF;
    PERFORM set_config('lock_timeout', greatest(p_timeout_ms, 1)::text || 'ms', true);
    -- The lock table shows keys as unsigned; the lock functions take signed integers.
    PERFORM pg_advisory_xact_lock_shared(
        hashtext(current_schema()),
        (CASE WHEN v_key > 2147483647 THEN v_key - 4294967296 ELSE v_key END)::integer);
    RETURN true;
END
$$;

-- Pin every function's name resolution to this schema, whatever the caller's search_path.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION append_events(text, bigint, boolean, uuid[], text[], integer[], jsonb[], jsonb[], text) SET search_path = %I', current_schema());
    EXECUTE format('ALTER FUNCTION safe_position() SET search_path = %I', current_schema());
    EXECUTE format('ALTER FUNCTION read_all(bigint, bigint) SET search_path = %I', current_schema());
    EXECUTE format('ALTER FUNCTION head_position() SET search_path = %I', current_schema());
    EXECUTE format('ALTER FUNCTION await_oldest_append(bigint) SET search_path = %I', current_schema());
END
$$;
