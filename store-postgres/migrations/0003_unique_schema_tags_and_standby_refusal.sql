-- Two changes to the gap markers of ADR 0001, in one migration so that appenders and readers switch together:
--
-- 1. Schema tags are allocated, not hashed. A marker's key carries a 15-bit tag of its schema; until now the tag
--    was 15 bits of hashtext(schema), so with a few hundred schemas in one database two shared a tag and a busy
--    tenant held back the other's readers. Now each schema takes a tag no other schema in the database holds, from
--    the registry table annals_registry.schema_tags, preferring its old hash tag so that nothing changes for a
--    schema that did not collide. The tag is baked into schema_tag(), an immutable SQL function the planner
--    inlines, and append_events, safe_position and await_oldest_append use it.
-- 2. safe_position() refuses to run on a hot standby: a standby's lock table does not show the primary's appends in
--    flight, so the bound it computed could let a reader skip an event.
--
-- Appends in flight while this runs would hold markers under the old tag, which the new readers do not look for:
-- the SHARE lock below waits for every open append of this schema to end and keeps new ones out until this
-- migration has committed.
LOCK TABLE events IN SHARE MODE;

-- One migration of the registry at a time in this database, whatever the schema.
SELECT pg_advisory_xact_lock(hashtext('annals_registry.schema_tags'));

-- The registry, created by the first schema migrated in the database (which needs CREATE on the database; later
-- ones only use it). Every role may allocate a tag.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'annals_registry') THEN
        CREATE SCHEMA annals_registry;
        GRANT USAGE ON SCHEMA annals_registry TO PUBLIC;
    END IF;
    IF to_regclass('annals_registry.schema_tags') IS NULL THEN
        CREATE TABLE annals_registry.schema_tags (
            schema_name text    COLLATE "C" PRIMARY KEY,
            tag         integer NOT NULL UNIQUE CHECK (tag BETWEEN 0 AND 32767)
        );
        GRANT SELECT, INSERT, DELETE ON annals_registry.schema_tags TO PUBLIC;
    END IF;
END
$$;

-- The allocator: the tag of p_schema, allocated now if it has none. Created once per database, by the first
-- schema migrated with this version.
DO $outer$
BEGIN
    IF to_regprocedure('annals_registry.allocate_tag(text)') IS NULL THEN
        CREATE FUNCTION annals_registry.allocate_tag(p_schema text) RETURNS integer
        LANGUAGE plpgsql VOLATILE
        SET search_path = pg_catalog, annals_registry
        AS $$
        DECLARE
            v_tag integer;
        BEGIN
            -- One allocation at a time in this database.
            PERFORM pg_advisory_xact_lock(hashtext('annals_registry.schema_tags'));
            -- Tags of schemas that no longer exist are free again.
            DELETE FROM annals_registry.schema_tags t
             WHERE NOT EXISTS (SELECT 1 FROM pg_namespace n WHERE n.nspname = t.schema_name);
            SELECT t.tag INTO v_tag FROM annals_registry.schema_tags t WHERE t.schema_name = p_schema;
            IF v_tag IS NOT NULL THEN
                RETURN v_tag;
            END IF;
            -- The first free tag from the old hash tag on, staying clear of the hash tags of schemas migrated
            -- before this version that have not registered yet (they keep using their hash until they do).
            SELECT c.tag INTO v_tag
              FROM (SELECT ((hashtext(p_schema) & 32767) + g) % 32768 AS tag, g
                      FROM generate_series(0, 32767) AS g) AS c
             WHERE NOT EXISTS (SELECT 1 FROM annals_registry.schema_tags t WHERE t.tag = c.tag)
               AND NOT EXISTS (
                     SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                      WHERE p.proname = 'append_events' AND n.nspname <> p_schema
                        AND (hashtext(n.nspname) & 32767) = c.tag
                        AND NOT EXISTS (SELECT 1 FROM annals_registry.schema_tags t
                                         WHERE t.schema_name = n.nspname))
             ORDER BY c.g
             LIMIT 1;
            IF v_tag IS NULL THEN
                RAISE EXCEPTION 'annals: all 32768 schema tags of database % are taken', current_database()
                    USING HINT = 'Spread the event store schemas over several databases.';
            END IF;
            INSERT INTO annals_registry.schema_tags (schema_name, tag) VALUES (p_schema, v_tag);
            RETURN v_tag;
        END
        $$;
        GRANT EXECUTE ON FUNCTION annals_registry.allocate_tag(text) TO PUBLIC;
    END IF;
END
$outer$;

DO $$
BEGIN
    EXECUTE format('CREATE OR REPLACE FUNCTION schema_tag() RETURNS bigint LANGUAGE sql IMMUTABLE PARALLEL SAFE '
                   'AS %L', format('SELECT %s::bigint', annals_registry.allocate_tag(current_schema())));
END
$$;

-- As in 0002, with the allocated tag.
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
    v_locked := pg_advisory_xact_lock_shared((schema_tag() << 48) | v_low)::text;

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

-- As in 0001, with the allocated tag, and refusing to run on a hot standby.
CREATE OR REPLACE FUNCTION safe_position() RETURNS bigint
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_last bigint;
    v_low  bigint;
    v_tag  bigint := schema_tag();
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION 'annals: the global event order cannot be read on a hot standby (pg_is_in_recovery() is true): a standby does not see the primary''s appends in flight, so a reader could skip an event'
            USING ERRCODE = 'AN001',
                  HINT = 'Read the global order (read_all, head, wait_for_events, projections) through a connection to the primary.';
    END IF;
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

-- As in 0001, with the allocated tag.
CREATE OR REPLACE FUNCTION await_oldest_append(p_timeout_ms bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_tag    bigint := schema_tag();
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
    PERFORM pg_advisory_xact_lock_shared(
        hashtext(current_schema()),
        (CASE WHEN v_key > 2147483647 THEN v_key - 4294967296 ELSE v_key END)::integer);
    RETURN true;
END
$$;

-- CREATE OR REPLACE drops the functions' settings: pin their name resolution to this schema again. (schema_tag()
-- names nothing and stays without settings, so that the planner can inline it.)
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION append_events(text, bigint, boolean, uuid[], text[], integer[], jsonb[], jsonb[], text) SET search_path = %I', current_schema());
    EXECUTE format('ALTER FUNCTION safe_position() SET search_path = %I', current_schema());
    EXECUTE format('ALTER FUNCTION await_oldest_append(bigint) SET search_path = %I', current_schema());
END
$$;
