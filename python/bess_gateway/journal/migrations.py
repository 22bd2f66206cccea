"""The journal's schema: MIGRATIONS[i] takes the file from version i to i + 1 (PRAGMA
user_version), run in order by the database layer (`db.Database`). Append only: a shipped entry
never changes, a change is a new entry."""

from __future__ import annotations

# What a queued message costs besides its payload (row, ids, index entries), for the disk budget.
# Written into the budget migration's triggers: a change needs a new migration.
OUTBOX_ROW_BYTES = 100

# Each entry migrates the schema from version i to i + 1 (PRAGMA user_version). Append only.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
        """CREATE TABLE settings (
            endpoint_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            PRIMARY KEY (endpoint_id, key)) WITHOUT ROWID""",
        """CREATE TABLE meters (
            endpoint_id TEXT NOT NULL, connector INTEGER NOT NULL, energy_wh REAL NOT NULL,
            PRIMARY KEY (endpoint_id, connector)) WITHOUT ROWID""",
        """CREATE TABLE transactions (
            endpoint_id TEXT NOT NULL, local_id TEXT NOT NULL, connector INTEGER NOT NULL,
            id_tag_hash TEXT NOT NULL, meter_start_wh INTEGER NOT NULL, started_at TEXT NOT NULL,
            transaction_id TEXT, stopped INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL,
            PRIMARY KEY (endpoint_id, local_id)) WITHOUT ROWID""",
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, endpoint_id TEXT NOT NULL,
            action TEXT NOT NULL, payload TEXT NOT NULL, local_tx_id TEXT,
            unique_id TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX outbox_by_endpoint ON outbox (endpoint_id, seq)",
        """CREATE INDEX outbox_by_tx ON outbox (endpoint_id, local_tx_id)
            WHERE local_tx_id IS NOT NULL""",
    ),
    (  # local authorization list and authorization cache, by keyed idTag hash only
        """CREATE TABLE auth_list (
            endpoint_id TEXT NOT NULL, id_tag_hash TEXT NOT NULL, status TEXT NOT NULL,
            expiry TEXT, parent_hash TEXT,
            PRIMARY KEY (endpoint_id, id_tag_hash)) WITHOUT ROWID""",
        """CREATE TABLE auth_list_version (
            endpoint_id TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE auth_cache (
            endpoint_id TEXT NOT NULL, id_tag_hash TEXT NOT NULL, status TEXT NOT NULL,
            expiry TEXT, parent_hash TEXT, updated_at TEXT NOT NULL,
            PRIMARY KEY (endpoint_id, id_tag_hash)) WITHOUT ROWID""",
    ),
    (  # reservations in force (ReserveNow), by keyed idTag hash only
        """CREATE TABLE reservations (
            endpoint_id TEXT NOT NULL, reservation_id INTEGER NOT NULL,
            connector INTEGER NOT NULL, id_tag_hash TEXT NOT NULL, parent_hash TEXT,
            expiry TEXT NOT NULL,
            PRIMARY KEY (endpoint_id, reservation_id)) WITHOUT ROWID""",
    ),
    (  # installed charging profiles (smart charging), as the domain's JSON
        """CREATE TABLE charging_profiles (
            endpoint_id TEXT NOT NULL, profile_id INTEGER NOT NULL, data TEXT NOT NULL,
            installed_at TEXT NOT NULL,
            PRIMARY KEY (endpoint_id, profile_id)) WITHOUT ROWID""",
    ),
    (  # the outbox's disk budget: each message's Retention, and its size kept by triggers in
       # one row, so checking the budget is a point read, never a scan (docs/operations.md)
        "ALTER TABLE outbox ADD COLUMN retention INTEGER NOT NULL DEFAULT 0",
        """CREATE INDEX outbox_thinnable ON outbox (endpoint_id, local_tx_id, seq)
            WHERE retention = 1""",
        "CREATE INDEX outbox_expendable ON outbox (seq) WHERE retention = 2",
        """CREATE TABLE outbox_usage (
            id INTEGER PRIMARY KEY CHECK (id = 0), bytes INTEGER NOT NULL)""",
        f"""INSERT INTO outbox_usage (id, bytes) SELECT 0,
            COALESCE(SUM(length(CAST(payload AS BLOB)) + {OUTBOX_ROW_BYTES}), 0) FROM outbox""",
        f"""CREATE TRIGGER outbox_usage_insert AFTER INSERT ON outbox BEGIN
            UPDATE outbox_usage SET bytes = bytes + length(CAST(NEW.payload AS BLOB))
                + {OUTBOX_ROW_BYTES} WHERE id = 0; END""",
        f"""CREATE TRIGGER outbox_usage_delete AFTER DELETE ON outbox BEGIN
            UPDATE outbox_usage SET bytes = bytes - length(CAST(OLD.payload AS BLOB))
                - {OUTBOX_ROW_BYTES} WHERE id = 0; END""",
        """CREATE TRIGGER outbox_usage_update AFTER UPDATE OF payload ON outbox BEGIN
            UPDATE outbox_usage SET bytes = bytes - length(CAST(OLD.payload AS BLOB))
                + length(CAST(NEW.payload AS BLOB)) WHERE id = 0; END""",
    ),
)
