-- append_events without a `SET search_path` clause (same contract, same locks in the same order as 0003).
--
-- A function with a SET clause runs every call through a GUC save and restore (a new nesting level, the setting
-- parsed and assigned, the namespace search path recomputed, every cached plan of the body revalidated against
-- it) and cannot keep its plans warm across calls as cheaply. On the command path that was a sixth of the server's
-- work per append: pgbench, 8 clients, a stream read and an append per transaction, synchronous_commit off so
-- that CPU is what counts, four interleaved 6-second rounds each on the 2-core machine: 3,315 transactions/s with
-- the clause, 3,880 without (+17%; faster in every round).
--
-- Name resolution stays pinned without it: the body is generated here with every name it uses qualified, the
-- store's own objects by this schema (quoted with %I) and the built-in functions by pg_catalog (except the
-- multi-argument unnest in FROM, which PostgreSQL only recognises unqualified), and the schema's
-- hash is a literal instead of hashtext(current_schema()) (which would now name the caller's schema). The function
-- is not SECURITY DEFINER, so the caller's search_path can change nothing but its own session's operators.
DO $migration$
DECLARE
    v_schema text := current_schema();
BEGIN
    EXECUTE format($body$
CREATE OR REPLACE FUNCTION %1$I.append_events(
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
    v_current bigint;
    v_low     bigint;
    v_locked  text;
BEGIN
    -- Serialize appends per stream (a hash collision only serializes two streams). Taken first, so that an
    -- append waiting here holds no gap marker. The first key is hashtext(<this schema>).
    v_locked := pg_catalog.pg_advisory_xact_lock((%2$s)::integer, pg_catalog.hashtext(p_stream))::text;
    -- A new statement, so a new snapshot: it sees every append that held the lock before us.
    SELECT coalesce(pg_catalog.max(e.stream_version), 0) INTO v_current FROM %1$I.events e WHERE e.stream_id = p_stream;
    o_stream_version := v_current;

    IF NOT (p_expected = -1 OR (p_expected = -2 AND v_current > 0) OR p_expected = v_current) THEN
        o_outcome := CASE WHEN EXISTS (SELECT 1 FROM %1$I.events e WHERE e.event_id = ANY (p_ids)) THEN 2 ELSE 1 END;
        RETURN;
    END IF;
    IF p_check_ids THEN
        IF EXISTS (SELECT 1 FROM %1$I.events e WHERE e.event_id = ANY (p_ids)) THEN
            o_outcome := 2;
            RETURN;
        END IF;
    END IF;

    -- The gap marker (see 0001 and ADR 0001): a shared transaction lock keyed by this schema's tag and the last
    -- position drawn so far, taken before this transaction draws any position.
    v_low := coalesce(pg_catalog.pg_sequence_last_value(%3$L::regclass), 0);
    v_locked := pg_catalog.pg_advisory_xact_lock_shared((%1$I.schema_tag() << 48) | v_low)::text;

    IF pg_catalog.cardinality(p_ids) = 1 THEN
        INSERT INTO %1$I.events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
        VALUES (pg_catalog.nextval(%3$L::regclass), p_stream, v_current + 1, p_ids[1], p_types[1], p_schema_versions[1],
                p_payloads[1], p_metadata[1])
        RETURNING position INTO o_last_position;
        o_first_position := o_last_position;
    ELSE
        INSERT INTO %1$I.events (position, stream_id, stream_version, event_id, event_type, schema_version, payload, metadata)
        SELECT pg_catalog.nextval(%3$L::regclass), p_stream, v_current + u.ord, u.id, u.ty, u.sv, u.pl, u.md
        FROM unnest(p_ids, p_types, p_schema_versions, p_payloads, p_metadata) WITH ORDINALITY AS u(id, ty, sv, pl, md, ord);
        o_last_position := pg_catalog.currval(%3$L::regclass);
        SELECT e.position INTO o_first_position FROM %1$I.events e
         WHERE e.stream_id = p_stream AND e.stream_version = v_current + 1;
    END IF;
    o_outcome := 0;
    o_stream_version := v_current + pg_catalog.cardinality(p_ids);
    IF p_notify_channel IS NOT NULL THEN
        PERFORM pg_catalog.pg_notify(p_notify_channel, '');
    END IF;
END
$$
$body$, v_schema, hashtext(v_schema), format('%I.events_position_seq', v_schema));
    -- CREATE OR REPLACE already assigns no settings (it replaces them with the command's: none); say so anyway.
    EXECUTE format('ALTER FUNCTION %I.append_events(text, bigint, boolean, uuid[], text[], integer[], jsonb[], jsonb[], text) RESET search_path', v_schema);
END
$migration$;
