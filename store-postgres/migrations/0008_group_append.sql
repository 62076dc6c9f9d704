-- Group commit (ADR 0006): several appends, to any streams, in one call and so in one statement, one transaction
-- and one commit. Each append goes through append_events exactly as a lone append does (same stream lock, same gap
-- marker, same expected-version and replay checks), so ADR 0001's guarantee holds for the batch as it holds for a
-- unit of work spanning several streams.
--
-- The appends are flattened into arrays: append i goes to p_streams[i] with expected version p_expected[i] (encoded
-- as for append_events) and owns the next p_counts[i] elements of the event arrays. Returns one row per append:
--   r_index: i (1-based, as given);
--   r_outcome, r_stream_version, r_first_position, r_last_position: append_events' result for it.
-- Appends run in the order of their stream lock keys (hashtext of the stream), ties in the order given: every batch
-- takes its stream locks in one global order, so two batches never deadlock each other, and two appends to the same
-- stream run as given (the second sees the first, as if they were sequential). The replay check is on
-- (p_check_ids), so an event id stored earlier, or by an earlier append of the same batch, is reported (outcome 2)
-- instead of aborting the batch. Anything that does raise an error (a concurrent transaction storing the same event
-- id in the instant between the check and the insert, a deadlock with a caller's own transaction) fails the whole
-- statement and commits nothing; the store then runs the batch's appends one by one.
CREATE FUNCTION append_batch(
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
    v_appends integer := coalesce(cardinality(p_streams), 0);
    v_starts  integer[] := '{}';
    v_next    integer := 1;
    v_i       integer;
    v_lo      integer;
    v_hi      integer;
BEGIN
    IF coalesce(cardinality(p_expected), 0) <> v_appends OR coalesce(cardinality(p_counts), 0) <> v_appends THEN
        RAISE EXCEPTION 'annals: append_batch got % streams, % expected versions and % counts',
            v_appends, coalesce(cardinality(p_expected), 0), coalesce(cardinality(p_counts), 0)
            USING ERRCODE = '22023';
    END IF;
    FOR v_i IN 1 .. v_appends LOOP
        IF p_counts[v_i] IS NULL OR p_counts[v_i] < 1 THEN
            RAISE EXCEPTION 'annals: append_batch append % has % events', v_i, p_counts[v_i] USING ERRCODE = '22023';
        END IF;
        v_starts := v_starts || v_next;
        v_next := v_next + p_counts[v_i];
    END LOOP;
    IF v_next - 1 <> coalesce(cardinality(p_ids), 0) THEN
        RAISE EXCEPTION 'annals: append_batch counts % events but got % ids', v_next - 1, coalesce(cardinality(p_ids), 0)
            USING ERRCODE = '22023';
    END IF;

    FOR v_i IN SELECT u.ord FROM unnest(p_streams) WITH ORDINALITY AS u(s, ord) ORDER BY hashtext(u.s), u.ord LOOP
        v_lo := v_starts[v_i];
        v_hi := v_lo + p_counts[v_i] - 1;
        r_index := v_i;
        SELECT a.o_outcome, a.o_stream_version, a.o_first_position, a.o_last_position
          INTO r_outcome, r_stream_version, r_first_position, r_last_position
          FROM append_events(p_streams[v_i], p_expected[v_i], true, p_ids[v_lo:v_hi], p_types[v_lo:v_hi],
                             p_schema_versions[v_lo:v_hi], p_payloads[v_lo:v_hi], p_metadata[v_lo:v_hi], NULL) AS a;
        RETURN NEXT;
    END LOOP;
END
$$;

-- Pin the function's name resolution to this schema, whatever the caller's search_path.
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION append_batch(text[], bigint[], integer[], uuid[], text[], integer[], jsonb[], jsonb[]) SET search_path = %I', current_schema());
END
$$;
