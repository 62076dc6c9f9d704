-- The replay checks plan for the table as it is, and append_batch (0008) loses its `SET search_path` clause.
--
-- append_events looks for already stored event ids (`event_id = ANY (p_ids)`) when a batch is checked up front
-- (group commit, `p_check_ids`) and after a version conflict. As a static statement its plan was cached per
-- session: planned while the table was small, it stayed a sequential scan as the table grew, and every checked
-- append read the whole table (perf on the server during `command-8-group`: HeapTupleSatisfiesVisibility,
-- ExecEvalScalarArrayOp and uuid_eq on top; 1.3-1.8 ms of server CPU per command at 20,000 commands, where a lone
-- append costs 0.3 ms). The check now runs as a dynamic statement, planned at each call for the table's current
-- size and the ids given (an index probe per id once the table has more than a few pages). Autovacuum's ANALYZE
-- would also have replaced the cached plan, but only once it ran; a store must not depend on when it does.
--
-- append_batch is regenerated without its `SET search_path` clause, as 0009 did for append_events (each call
-- pushed a GUC nest level whose setting its append_events calls ran under): every name in its body is qualified.
-- Everything else is as in 0009 and 0008: same contract, same locks in the same order.
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
    v_stored  boolean;
BEGIN
    -- Serialize appends per stream (a hash collision only serializes two streams). Taken first, so that an
    -- append waiting here holds no gap marker. The first key is hashtext(<this schema>).
    v_locked := pg_catalog.pg_advisory_xact_lock((%2$s)::integer, pg_catalog.hashtext(p_stream))::text;
    -- A new statement, so a new snapshot: it sees every append that held the lock before us.
    SELECT coalesce(pg_catalog.max(e.stream_version), 0) INTO v_current FROM %1$I.events e WHERE e.stream_id = p_stream;
    o_stream_version := v_current;

    IF NOT (p_expected = -1 OR (p_expected = -2 AND v_current > 0) OR p_expected = v_current) THEN
        EXECUTE %4$L INTO v_stored USING p_ids;
        o_outcome := CASE WHEN v_stored THEN 2 ELSE 1 END;
        RETURN;
    END IF;
    IF p_check_ids THEN
        EXECUTE %4$L INTO v_stored USING p_ids;
        IF v_stored THEN
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
$body$, v_schema, hashtext(v_schema), format('%I.events_position_seq', v_schema),
       format('SELECT EXISTS (SELECT 1 FROM %I.events e WHERE e.event_id = ANY ($1))', v_schema));
    -- CREATE OR REPLACE already assigns no settings (it replaces them with the command's: none); say so anyway.
    EXECUTE format('ALTER FUNCTION %I.append_events(text, bigint, boolean, uuid[], text[], integer[], jsonb[], jsonb[], text) RESET search_path', v_schema);
    EXECUTE format($body$
CREATE OR REPLACE FUNCTION %1$I.append_batch(
    p_streams         text[],
    p_expected        bigint[],
    p_counts          integer[],
    p_ids             uuid[],
    p_types           text[],
    p_schema_versions integer[],
    p_payloads        jsonb[],
    p_metadata        jsonb[]
)
RETURNS TABLE (
    r_index          integer,
    r_outcome        smallint,
    r_stream_version bigint,
    r_first_position bigint,
    r_last_position  bigint
)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_appends integer := coalesce(pg_catalog.cardinality(p_streams), 0);
    v_starts  integer[] := '{}';
    v_next    integer := 1;
    v_i       integer;
    v_lo      integer;
    v_hi      integer;
BEGIN
    IF coalesce(pg_catalog.cardinality(p_expected), 0) <> v_appends
       OR coalesce(pg_catalog.cardinality(p_counts), 0) <> v_appends THEN
        RAISE EXCEPTION 'annals: append_batch got %% streams, %% expected versions and %% counts',
            v_appends, coalesce(pg_catalog.cardinality(p_expected), 0), coalesce(pg_catalog.cardinality(p_counts), 0)
            USING ERRCODE = '22023';
    END IF;
    FOR v_i IN 1 .. v_appends LOOP
        IF p_counts[v_i] IS NULL OR p_counts[v_i] < 1 THEN
            RAISE EXCEPTION 'annals: append_batch append %% has %% events', v_i, p_counts[v_i] USING ERRCODE = '22023';
        END IF;
        v_starts := v_starts || v_next;
        v_next := v_next + p_counts[v_i];
    END LOOP;
    IF v_next - 1 <> coalesce(pg_catalog.cardinality(p_ids), 0) THEN
        RAISE EXCEPTION 'annals: append_batch counts %% events but got %% ids', v_next - 1,
            coalesce(pg_catalog.cardinality(p_ids), 0)
            USING ERRCODE = '22023';
    END IF;

    FOR v_i IN SELECT u.ord FROM pg_catalog.unnest(p_streams) WITH ORDINALITY AS u(s, ord)
               ORDER BY pg_catalog.hashtext(u.s), u.ord LOOP
        v_lo := v_starts[v_i];
        v_hi := v_lo + p_counts[v_i] - 1;
        r_index := v_i;
        SELECT a.o_outcome, a.o_stream_version, a.o_first_position, a.o_last_position
          INTO r_outcome, r_stream_version, r_first_position, r_last_position
          FROM %1$I.append_events(p_streams[v_i], p_expected[v_i], true, p_ids[v_lo:v_hi], p_types[v_lo:v_hi],
                                  p_schema_versions[v_lo:v_hi], p_payloads[v_lo:v_hi], p_metadata[v_lo:v_hi],
                                  NULL) AS a;
        RETURN NEXT;
    END LOOP;
END
$$
$body$, v_schema);
    EXECUTE format('ALTER FUNCTION %I.append_batch(text[], bigint[], integer[], uuid[], text[], integer[], jsonb[], jsonb[]) RESET search_path', v_schema);
END
$migration$;
