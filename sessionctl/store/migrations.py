"""sessionctl's own schema in Postgres (``sessionctl``: receipts, pending media keys, the DSR
service's tables, the export registry), created and upgraded by small versioned migrations under an
advisory lock (several workers may start at once): by ``sessionctl migrate`` (an administrator), or
by the first job of a role that may create it. An up-to-date schema is never touched by DDL."""

from __future__ import annotations

import asyncpg

from sessionctl.errors import InsufficientPrivilege

_LOCK_KEY = 0x5E55C7  # pg_advisory_xact_lock key for migrations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE sessionctl.receipts (
            id            bigserial PRIMARY KEY,
            job_id        text        NOT NULL UNIQUE,
            kind          text        NOT NULL,
            user_hmac     text        NOT NULL,
            target        text        NOT NULL,
            agents        jsonb       NOT NULL,
            counts        jsonb       NOT NULL,
            remaining     integer     NOT NULL CHECK (remaining = 0),
            late_sessions integer     NOT NULL DEFAULT 0,
            started_at    timestamptz NOT NULL,
            finished_at   timestamptz NOT NULL,
            requested_by  text,
            recorded_at   timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX receipts_user_hmac ON sessionctl.receipts (user_hmac, finished_at);
        CREATE FUNCTION sessionctl.receipts_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'sessionctl.receipts is append-only';
        END $$;
        CREATE TRIGGER receipts_no_update BEFORE UPDATE OR DELETE ON sessionctl.receipts
            FOR EACH ROW EXECUTE FUNCTION sessionctl.receipts_append_only();
        CREATE TRIGGER receipts_no_truncate BEFORE TRUNCATE ON sessionctl.receipts
            FOR EACH STATEMENT EXECUTE FUNCTION sessionctl.receipts_append_only();
        """,
    ),
    (
        2,
        """
        -- a bulk erasure is one job for many users: one receipt per (job, user)
        ALTER TABLE sessionctl.receipts DROP CONSTRAINT receipts_job_id_key;
        ALTER TABLE sessionctl.receipts ADD CONSTRAINT receipts_job_user UNIQUE (job_id, user_hmac);
        """,
    ),
    (
        3,
        """
        -- what was erased (scope), rows outside the agent schemas (vector and authz tables, media
        -- objects), and why (a request, or a re-sweep that found the user's data back)
        ALTER TABLE sessionctl.receipts ADD COLUMN scope text NOT NULL DEFAULT 'sessions',
            ADD COLUMN stores jsonb NOT NULL DEFAULT '{}', ADD COLUMN origin text NOT NULL DEFAULT 'request';
        """,
    ),
    (
        4,
        """
        -- keys of offloaded media whose sessions were deleted, noted in the delete's transaction and
        -- forgotten once the object is gone (sessionctl.media_storages); user HMAC, never the id
        CREATE TABLE sessionctl.media_pending (
            id              bigserial   PRIMARY KEY,
            job_id          text        NOT NULL,
            storage         text        NOT NULL,
            storage_key     text        NOT NULL,
            user_hmac       text        NOT NULL,
            session_id      text        NOT NULL,
            noted_at        timestamptz NOT NULL DEFAULT now(),
            attempts        integer     NOT NULL DEFAULT 0,
            last_attempt_at timestamptz,
            UNIQUE (storage, storage_key)
        );
        CREATE INDEX media_pending_job ON sessionctl.media_pending (job_id);
        CREATE INDEX media_pending_user ON sessionctl.media_pending (user_hmac);
        """,
    ),
    (
        5,
        """
        -- the DSR service (sessionctl serve): API tokens (their SHA-256 only), the deadline ledger of
        -- requests (user HMAC, never the id) and the webhooks owed to the callers, durable
        CREATE TABLE sessionctl.api_tokens (
            name        text        PRIMARY KEY,
            token_hash  text        NOT NULL UNIQUE,
            scopes      text[]      NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT now(),
            revoked_at  timestamptz
        );
        CREATE TABLE sessionctl.dsr_requests (
            request_id       text        PRIMARY KEY,
            kind             text        NOT NULL CHECK (kind IN ('erasure', 'export')),
            request_ref      text,
            user_hmac        text        NOT NULL,
            target           text        NOT NULL,
            options          jsonb       NOT NULL DEFAULT '{}',
            received_at      timestamptz NOT NULL,
            due_at           timestamptz NOT NULL,
            extension_reason text,
            status           text        NOT NULL DEFAULT 'open'
                                         CHECK (status IN ('open', 'completed', 'dry_run')),
            job_ids          text[]      NOT NULL DEFAULT '{}',
            last_job_status  text,
            callback_url     text,
            requested_by     text,
            completed_at     timestamptz,
            receipt_id       bigint,
            created_at       timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX dsr_requests_ref ON sessionctl.dsr_requests (kind, request_ref);
        CREATE INDEX dsr_requests_open ON sessionctl.dsr_requests (due_at) WHERE status = 'open';
        CREATE INDEX dsr_requests_jobs ON sessionctl.dsr_requests USING gin (job_ids);
        CREATE INDEX dsr_requests_user ON sessionctl.dsr_requests (user_hmac);
        CREATE TABLE sessionctl.webhook_deliveries (
            id           bigserial   PRIMARY KEY,
            request_id   text        NOT NULL REFERENCES sessionctl.dsr_requests (request_id),
            job_id       text        NOT NULL,
            url          text        NOT NULL,
            body         jsonb       NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            next_at      timestamptz NOT NULL DEFAULT now(),
            attempts     jsonb       NOT NULL DEFAULT '[]',
            delivered_at timestamptz,
            gave_up_at   timestamptz,
            UNIQUE (request_id, job_id)
        );
        CREATE INDEX webhook_deliveries_due ON sessionctl.webhook_deliveries (next_at)
            WHERE delivered_at IS NULL AND gave_up_at IS NULL;
        CREATE INDEX webhook_deliveries_job ON sessionctl.webhook_deliveries (job_id);
        """,
    ),
    (
        6,
        """
        -- a data-subject request is the unit of truth: who asked (the token), the person's id sealed
        -- until the request closes (so a request outlives Redis), dry runs apart, the first due date
        -- and every extension, whether the erasure was complete and what remains, late or not
        ALTER TABLE sessionctl.dsr_requests
            ADD COLUMN token_name   text,
            ADD COLUMN dry_run      boolean     NOT NULL DEFAULT false,
            ADD COLUMN subject      bytea,
            ADD COLUMN first_due_at timestamptz,
            ADD COLUMN extensions   jsonb       NOT NULL DEFAULT '[]',
            ADD COLUMN complete     boolean,
            ADD COLUMN remains      jsonb,
            ADD COLUMN late         boolean,
            ADD COLUMN job_added_at timestamptz NOT NULL DEFAULT now();
        UPDATE sessionctl.dsr_requests SET first_due_at = due_at,
            dry_run = (status = 'dry_run' OR coalesce(options ->> 'dry_run', '') = 'true'),
            extensions = CASE WHEN extension_reason IS NULL THEN '[]'::jsonb ELSE jsonb_build_array(
                jsonb_build_object('kind', 'extension', 'until', due_at, 'reason', extension_reason)) END;
        ALTER TABLE sessionctl.dsr_requests ALTER COLUMN first_due_at SET NOT NULL;
        CREATE INDEX dsr_requests_token ON sessionctl.dsr_requests (token_name, created_at);
        -- the receipt says whether the person is gone from every store, and what remains
        ALTER TABLE sessionctl.receipts ADD COLUMN complete boolean, ADD COLUMN remains jsonb NOT NULL DEFAULT '{}';
        -- every export file written, so an erasure deletes the person's and expired ones go
        CREATE TABLE sessionctl.exports (
            job_id       text        PRIMARY KEY,
            path         text        NOT NULL,
            user_hmac    text,
            request_id   text,
            started_at   timestamptz NOT NULL,
            published_at timestamptz NOT NULL DEFAULT now(),
            expires_at   timestamptz,
            deleted_at   timestamptz,
            deleted_by   text
        );
        CREATE INDEX exports_user ON sessionctl.exports (user_hmac) WHERE deleted_at IS NULL;
        CREATE INDEX exports_expiry ON sessionctl.exports (expires_at) WHERE deleted_at IS NULL;
        """,
    ),
    (
        7,
        """
        -- how the receipt's declared stores find a person where Agno keeps no owner of its own
        ALTER TABLE sessionctl.receipts ADD COLUMN exemptions jsonb NOT NULL DEFAULT '{}';
        """,
    ),
    (
        8,
        """
        -- every webhook delivery has an event id, made once when it is noted (the default covers a row
        -- noted by an older sessionctl), the same across retries and resends: receivers drop repeats by it
        ALTER TABLE sessionctl.webhook_deliveries
            ADD COLUMN event_id text DEFAULT 'evt_' || replace(gen_random_uuid()::text, '-', '');
        UPDATE sessionctl.webhook_deliveries SET body = body || jsonb_build_object('event_id', event_id);
        ALTER TABLE sessionctl.webhook_deliveries ALTER COLUMN event_id SET NOT NULL;
        CREATE UNIQUE INDEX webhook_deliveries_event ON sessionctl.webhook_deliveries (event_id);
        """,
    ),
    (
        9,
        """
        -- legal holds: a person under hold is not erased (their requests end on_hold) nor cleaned by retention
        CREATE TABLE sessionctl.legal_holds (
            id          bigserial   PRIMARY KEY,
            user_hmac   text        NOT NULL,
            reason      text        NOT NULL,
            placed_by   text        NOT NULL,
            placed_at   timestamptz NOT NULL DEFAULT now(),
            released_at timestamptz,
            released_by text,
            -- the person's id, sealed under the operator's key (privacy.seal_subject, bound to
            -- "hold:<user_hmac>") while the hold is in place, so retention can leave them out;
            -- NULL once released
            subject     bytea
        );
        CREATE UNIQUE INDEX legal_holds_active ON sessionctl.legal_holds (user_hmac) WHERE released_at IS NULL;
        ALTER TABLE sessionctl.dsr_requests DROP CONSTRAINT IF EXISTS dsr_requests_status_check;
        ALTER TABLE sessionctl.dsr_requests ADD CONSTRAINT dsr_requests_status_check
            CHECK (status IN ('open', 'completed', 'dry_run', 'on_hold'));
        -- a DSR platform's request (Transcend, Ketch): the person's identifier as HMAC, the ledger
        -- requests it became (one per user id the identity mapping found), how to answer the platform
        -- (sealed: a nonce or a callback's credentials), how it ended
        CREATE TABLE sessionctl.connector_requests (
            id              text        PRIMARY KEY,
            platform        text        NOT NULL,
            kind            text        NOT NULL CHECK (kind IN ('erasure', 'export')),
            platform_ref    text        NOT NULL,
            replay_key      text        NOT NULL,
            identifier_hmac text        NOT NULL,
            user_hmacs      text[]      NOT NULL DEFAULT '{}',
            request_ids     text[]      NOT NULL DEFAULT '{}',
            reply           bytea,
            status          text        NOT NULL DEFAULT 'open'
                                        CHECK (status IN ('open', 'on_hold', 'not_found', 'completed', 'failed')),
            outcome         jsonb,
            received_at     timestamptz NOT NULL DEFAULT now(),
            completed_at    timestamptz,
            UNIQUE (platform, replay_key)
        );
        CREATE INDEX connector_requests_ref ON sessionctl.connector_requests (platform, platform_ref);
        ALTER TABLE sessionctl.dsr_requests ADD COLUMN connector_request_id text;
        CREATE INDEX dsr_requests_connector ON sessionctl.dsr_requests (connector_request_id)
            WHERE connector_request_id IS NOT NULL;
        -- what a delivery is: a caller's webhook, or a connector's answer to its platform
        ALTER TABLE sessionctl.webhook_deliveries ADD COLUMN kind text NOT NULL DEFAULT 'webhook';
        ALTER TABLE sessionctl.webhook_deliveries ALTER COLUMN request_id DROP NOT NULL;
        CREATE UNIQUE INDEX webhook_deliveries_answer ON sessionctl.webhook_deliveries (job_id)
            WHERE kind <> 'webhook';
        """,
    ),
]


LATEST = max(v for v, _ in MIGRATIONS)


async def migrate(conn: asyncpg.Connection) -> int:
    """Apply the migrations not applied yet; the schema version after. Needs CREATE on the
    database the first time (``sessionctl migrate``, run by an administrator, does it)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS sessionctl;"
            " CREATE TABLE IF NOT EXISTS sessionctl.schema_migrations"
            " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM sessionctl.schema_migrations")}
        for version, sql in sorted(MIGRATIONS):
            if version not in done:
                await conn.execute(sql)
                await conn.execute("INSERT INTO sessionctl.schema_migrations (version) VALUES ($1)", version)
        return LATEST


async def version(conn: asyncpg.Connection) -> int | None:
    """The receipts schema's version (0: not created yet), without DDL; ``None`` when this role
    may not read it."""
    oid = await conn.fetchval(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'sessionctl' AND c.relname = 'schema_migrations'"
    )
    if oid is None:
        return 0
    if not await conn.fetchval(
        "SELECT has_schema_privilege('sessionctl', 'USAGE') AND has_table_privilege($1::oid, 'SELECT')", oid
    ):
        return None
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM sessionctl.schema_migrations"))


_migrated: set[str] = set()


async def ensure(conn: asyncpg.Connection, key: str) -> None:
    """The receipts schema at this version, once per process per database (``key``: the redacted
    DSN). An up-to-date schema runs no DDL, so a worker role without CREATE works once an
    administrator ran ``sessionctl migrate``; a missing or older one is migrated when the role may,
    and otherwise refused with what to run."""
    if key in _migrated:
        return
    current = await version(conn)
    if current is None:
        who = await conn.fetchval("SELECT current_user")
        raise InsufficientPrivilege(
            f"role {who} may not read sessionctl.schema_migrations: run `sessionctl grants --role {who}` and apply"
            " what it prints; nothing was deleted"
        )
    if current < LATEST:
        try:
            await migrate(conn)
        except asyncpg.exceptions.InsufficientPrivilegeError:
            who = await conn.fetchval("SELECT current_user")
            state = "missing" if current == 0 else f"at version {current}, this sessionctl needs {LATEST}"
            raise InsufficientPrivilege(
                f"the receipts schema sessionctl is {state} and role {who} may not create it: have an administrator"
                " run `sessionctl migrate` (or GRANT CREATE ON DATABASE to the role); nothing was deleted"
            ) from None
    _migrated.add(key)
