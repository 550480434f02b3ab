"""The PostgreSQL schema, versioned. Migrations run in one transaction under an advisory
lock, so nodes that start together apply each one exactly once; the others wait, then find
it done. Append new migrations; never edit one that has shipped.

Times are Unix seconds (double precision), as in the SQLite schema. A queue row holds one
event; a leased row has `lease_owner` (the node) and `lease_token` (this lease), and its
`available_at` is the lease's expiry, so "ready" is `available_at <= now` for every row.
Counters are kept per topic and node: a node only ever updates its own rows, so nodes never
wait for each other there, and a topic's figures are the sums.
"""

from __future__ import annotations

import asyncpg

from delivery.store import StorageUnusable

MIGRATION_LOCK = 0x5349474E  # pg_advisory_xact_lock key: "SIGN"

MIGRATIONS: tuple[str, ...] = (
    # 1: everything the SQLite schema holds at its version 6
    """
    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE sources (id text PRIMARY KEY, pipeline_key text NOT NULL UNIQUE, body bytea NOT NULL);
    CREATE TABLE integrations (id text PRIMARY KEY, source_id text NOT NULL REFERENCES sources(id), body bytea NOT NULL);
    CREATE TABLE identities (
        anonymous_id text PRIMARY KEY, user_id text, identity bytea NOT NULL, updated_at double precision NOT NULL
    );
    CREATE TABLE queue (
        id bigserial PRIMARY KEY,
        topic text NOT NULL,
        priority smallint NOT NULL DEFAULT 0,
        created_at double precision NOT NULL,
        available_at double precision NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        lease_owner text,
        lease_token bigint,
        last_error text,
        payload bytea NOT NULL
    );
    CREATE INDEX queue_ready ON queue (topic, priority DESC, available_at, id);
    CREATE TABLE dead_letters (
        id bigserial PRIMARY KEY,
        topic text NOT NULL,
        event_id text,
        payload bytea NOT NULL,
        created_at double precision NOT NULL,
        dead_at double precision NOT NULL,
        attempts integer NOT NULL,
        reason text NOT NULL
    );
    CREATE INDEX dead_letters_topic ON dead_letters (topic, id);
    CREATE TABLE counters (
        topic text NOT NULL,
        node text NOT NULL,
        accepted bigint NOT NULL DEFAULT 0,
        filtered bigint NOT NULL DEFAULT 0,
        delivered bigint NOT NULL DEFAULT 0,
        dead_lettered bigint NOT NULL DEFAULT 0,
        queued bigint NOT NULL DEFAULT 0,
        in_flight bigint NOT NULL DEFAULT 0,
        skipped_disabled bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (topic, node)
    );
    CREATE TABLE topic_errors (topic text PRIMARY KEY, last_error text NOT NULL, last_error_at double precision NOT NULL);
    CREATE TABLE rate_buckets (
        topic text PRIMARY KEY,
        tokens double precision NOT NULL,
        updated double precision NOT NULL,
        rate double precision NOT NULL,
        paused_until double precision NOT NULL DEFAULT 0
    );
    CREATE TABLE debug_log (
        id bigserial PRIMARY KEY,
        at double precision NOT NULL,
        source_id text,
        topic text,
        event_id text,
        status text NOT NULL,
        record bytea NOT NULL
    );
    CREATE INDEX debug_log_topic ON debug_log (topic, id);
    CREATE TABLE audit_log (
        id bigserial PRIMARY KEY,
        at double precision NOT NULL,
        action text NOT NULL,
        object_type text NOT NULL,
        object_id text NOT NULL,
        old bytea,
        new bytea
    );
    CREATE TABLE admin_sessions (
        key text PRIMARY KEY,
        csrf text NOT NULL,
        created_at double precision NOT NULL,
        expires_at double precision NOT NULL,
        client text
    );
    """,
    # 2: per source: refused requests by reason, the last few examples, when an event last came (issue 19)
    """
    CREATE TABLE refusals (
        source_id text NOT NULL,
        reason text NOT NULL,
        count bigint NOT NULL DEFAULT 0,
        PRIMARY KEY (source_id, reason)
    );
    CREATE TABLE refusal_examples (
        id bigserial PRIMARY KEY,
        source_id text NOT NULL,
        at double precision NOT NULL,
        reason text NOT NULL,
        detail text NOT NULL
    );
    CREATE INDEX refusal_examples_source ON refusal_examples (source_id, id);
    CREATE TABLE source_activity (source_id text PRIMARY KEY, last_event_at double precision NOT NULL);
    """,
    # 3: identities expire (issue 24): the retention task finds the oldest through an index
    """
    CREATE INDEX identities_updated ON identities (updated_at);
    """,
    # 4: run as a service (issue 27): erasure's suppressions (keyed digests, never the person's
    # hashes), alert destinations, open incidents and their history, events per integration, type and time bucket;
    # tables whose rows come and go are vacuumed sooner (at 1-2 % dead rows, not 20 %), so that
    # their freed space is reused before they grow
    """
    CREATE TABLE suppressions (key text PRIMARY KEY, until double precision NOT NULL);
    CREATE TABLE alert_destinations (id text PRIMARY KEY, body bytea NOT NULL);
    CREATE TABLE alert_incidents (key text PRIMARY KEY, body bytea NOT NULL);
    CREATE TABLE alert_history (id bigserial PRIMARY KEY, at double precision NOT NULL, body bytea NOT NULL);
    CREATE TABLE event_volume (
        topic text NOT NULL,
        event text NOT NULL,
        bucket double precision NOT NULL,
        count bigint NOT NULL,
        PRIMARY KEY (topic, event, bucket)
    );
    CREATE INDEX event_volume_bucket ON event_volume (bucket);
    ALTER TABLE queue SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);
    ALTER TABLE identities SET (autovacuum_vacuum_scale_factor = 0.02);
    ALTER TABLE dead_letters SET (autovacuum_vacuum_scale_factor = 0.02);
    ALTER TABLE debug_log SET (autovacuum_vacuum_scale_factor = 0.02);
    """,
    # 5: the rate bucket taken in one call, its rate recovering by the clock (issue 29). `rate` is
    # now the rate a 429 left at `slowed_at`; a row an older version lowered recovers at once.
    """
    ALTER TABLE rate_buckets ADD COLUMN slowed_at double precision NOT NULL DEFAULT 0;
    CREATE FUNCTION signal_edge_take_token(p_topic text, p_rate float8, p_burst float8, p_recovery float8)
    RETURNS float8 LANGUAGE plpgsql AS $$
    DECLARE
        b rate_buckets;
        t float8;
        r float8;
        have float8;
    BEGIN
        SELECT * INTO b FROM rate_buckets WHERE topic = p_topic FOR UPDATE;
        t := extract(epoch FROM clock_timestamp());
        IF b.topic IS NULL THEN
            INSERT INTO rate_buckets (topic, tokens, updated, rate) VALUES (p_topic, p_burst - 1, t, p_rate)
            ON CONFLICT (topic) DO NOTHING;
            IF FOUND THEN
                RETURN 0;
            END IF;
            RETURN signal_edge_take_token(p_topic, p_rate, p_burst, p_recovery);  -- another node made it
        END IF;
        IF t < b.paused_until THEN
            RETURN b.paused_until - t;
        END IF;
        r := least(p_rate, b.rate * power(2, least(64, greatest(0, t - b.slowed_at) / p_recovery)));
        have := least(p_burst, b.tokens + greatest(0, t - b.updated) * r);
        IF have >= 1 THEN
            UPDATE rate_buckets SET tokens = have - 1, updated = t WHERE topic = p_topic;
            RETURN 0;
        END IF;
        UPDATE rate_buckets SET tokens = have, updated = t WHERE topic = p_topic;
        RETURN (1 - have) / r;
    END
    $$;
    """,
    # 6: one rate budget per ad account (issue 26). Beside each integration's row, a row keyed
    # 'account:<ad account id>' holds its ad account's budget, which every integration and node
    # sending to that account shares; a call to Pinterest takes a token of both, or of neither,
    # in one call of signal_edge_take_call, by the database's clock. Older nodes keep taking
    # from their integration's row alone (signal_edge_take_token) until they are upgraded.
    """
    CREATE FUNCTION signal_edge_bucket_wait(p_key text, p_rate float8, p_burst float8, p_recovery float8,
                                            p_now float8)
    RETURNS float8 LANGUAGE plpgsql AS $$
    -- Lock the bucket's row (made, full, when new) and bring its tokens up to p_now: the seconds
    -- until it holds a token, 0 when it does. Takes none.
    DECLARE
        b rate_buckets;
        r float8;
        have float8;
    BEGIN
        SELECT * INTO b FROM rate_buckets WHERE topic = p_key FOR UPDATE;
        IF b.topic IS NULL THEN
            INSERT INTO rate_buckets (topic, tokens, updated, rate) VALUES (p_key, p_burst, p_now, p_rate)
            ON CONFLICT (topic) DO NOTHING;
            SELECT * INTO b FROM rate_buckets WHERE topic = p_key FOR UPDATE;
        END IF;
        IF p_now < b.paused_until THEN
            RETURN b.paused_until - p_now;
        END IF;
        r := least(p_rate, b.rate * power(2, least(64, greatest(0, p_now - b.slowed_at) / p_recovery)));
        have := least(p_burst, b.tokens + greatest(0, p_now - b.updated) * r);
        UPDATE rate_buckets SET tokens = have, updated = p_now WHERE topic = p_key;
        IF have >= 1 - 1e-9 THEN  -- a rounding error short of a whole token (ratelimit.WHOLE)
            RETURN 0;
        END IF;
        RETURN (1 - have) / r;
    END
    $$;
    CREATE FUNCTION signal_edge_take_call(p_topic text, p_rate float8, p_burst float8, p_account text,
                                          p_account_rate float8, p_account_burst float8, p_recovery float8,
                                          p_now float8, OUT own_wait float8, OUT account_wait float8)
    LANGUAGE plpgsql AS $$
    -- A token of the integration's bucket and one of its account's: (0, 0). Else none, and the
    -- wait for the integration's own (the account's is not looked at), or for the account's.
    -- Every caller locks the integration's row first, then the account's: none waits in a circle.
    -- p_now: NULL, the database's clock; a test's clock otherwise.
    DECLARE
        t float8 := coalesce(p_now, extract(epoch FROM clock_timestamp()));
    BEGIN
        account_wait := 0;
        own_wait := signal_edge_bucket_wait(p_topic, p_rate, p_burst, p_recovery, t);
        IF own_wait > 0 THEN
            RETURN;
        END IF;
        account_wait := signal_edge_bucket_wait(p_account, p_account_rate, p_account_burst, p_recovery, t);
        IF account_wait > 0 THEN
            RETURN;
        END IF;
        UPDATE rate_buckets SET tokens = tokens - 1 WHERE topic IN (p_topic, p_account);
    END
    $$;
    """,
)


async def migrate(conn: asyncpg.Connection) -> int:
    """Bring the database up to the newest schema; returns the version it is at."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
        current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        if current > len(MIGRATIONS):
            raise StorageUnusable(
                f"database schema version {current} is newer than this signal-edge ({len(MIGRATIONS)}); "
                "upgrade signal-edge or use another database")
        for version in range(current + 1, len(MIGRATIONS) + 1):
            await conn.execute(MIGRATIONS[version - 1])
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
    return len(MIGRATIONS)
