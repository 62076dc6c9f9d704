-- append_events, cheaper per call (same contract, same locks in the same order as 0001):
--   * the advisory locks are taken through PL/pgSQL's simple-expression path (an assignment) instead of PERFORM,
--     which runs a full SPI query each time; the void result is cast to text and ignored;
--   * the replay check's EXISTS only runs when asked for (p_check_ids), not evaluated as part of one expression;
--   * a single event is inserted with INSERT ... VALUES ... RETURNING position, without unnest ... WITH ORDINALITY.
-- Measured with pgbench (8 clients, synchronous_commit off so the server's CPU is what counts): 10-20% more calls
-- per second than 0001's version.
CREATE OR REPLACE FUNCTION append_events(
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
    v_locked  text;
BEGIN
    -- Serialize appends per stream (a hash collision only serializes two streams). Taken first, so that an
    -- append waiting here holds no gap marker.
    v_locked := pg_advisory_xact_lock(v_schema, hashtext(p_stream))::text;
    -- A new statement, so a new snapshot: it sees every append that held the lock before us.
    SELECT coalesce(max(e.stream_version), 0) INTO v_current FROM events e WHERE e.stream_id = p_stream;
    o_stream_version := v_current;

    IF NOT (p_expected = -1 OR (p_expected = -2 AND v_current > 0) OR p_expected = v_current) THEN
        o_outcome := CASE WHEN EXISTS (SELECT 1 FROM events e WHERE e.event_id = ANY (p_ids)) THEN 2 ELSE 1 END;
        RETURN;
    END IF;
    IF p_check_ids THEN
        IF EXISTS (SELECT 1 FROM events e WHERE e.event_id = ANY (p_ids)) THEN
            o_outcome := 2;
            RETURN;
        END IF;
    END IF;

    -- The gap marker (see 0001 and ADR 0001): a shared transaction lock keyed by this schema's tag and the last
    -- position drawn so far, taken before this transaction draws any position.
    v_low := coalesce(pg_sequence_last_value('events_position_seq'::regclass), 0);
    v_locked := pg_advisory_xact_lock_shared(((v_schema & 32767)::bigint << 48) | v_low)::text;

    IF cardinality(p_ids) = 1 THEN
        INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
        VALUES (nextval('events_position_seq'), p_stream, v_current + 1, p_ids[1], p_types[1], p_schema_versions[1],
                p_payloads[1], p_metadata[1])
        RETURNING position INTO o_last_position;
        o_first_position := o_last_position;
    ELSE
        INSERT INTO events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
        SELECT nextval('events_position_seq'), p_stream, v_current + u.ord, u.id, u.ty, u.sv, u.pl, u.md
        FROM unnest(p_ids, p_types, p_schema_versions, p_payloads, p_metadata) WITH ORDINALITY AS u(id, ty, sv, pl, md, ord);
        o_last_position := currval('events_position_seq');
        SELECT e.position INTO o_first_position FROM events e
         WHERE e.stream_id = p_stream AND e.stream_version = v_current + 1;
    END IF;
    o_outcome := 0;
    o_stream_version := v_current + cardinality(p_ids);
    IF p_notify_channel IS NOT NULL THEN
        PERFORM pg_notify(p_notify_channel, '');
    END IF;
END
$$;

-- CREATE OR REPLACE drops the function's settings: pin its name resolution to this schema again.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION append_events(text, bigint, boolean, uuid[], text[], integer[], jsonb[], jsonb[], text) SET search_path = %I', current_schema());
END
$$;
