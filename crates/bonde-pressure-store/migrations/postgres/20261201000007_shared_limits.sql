-- Shared rate limits (PgRateLimiter) and leases (PgLease), PostgreSQL only:
-- SQLite serves one process, which keeps core's in-process limiter and lease.

-- One row per limited key: its kind and the SHA-256 of its value (no phone
-- number or IP address in the clear). A sliding window keeps its charge
-- times in `times`; a token bucket the time it is full again in `full_at`.
-- `expires_at`: from then on the key is like a new one, and the row may be
-- deleted. `admitted`: the last charge's answer, returned by its statement.
-- No index besides the key, so that charges are HOT updates; the purge of
-- expired rows scans the table (one row per key active within its window).
CREATE TABLE rate_limits (
    kind text NOT NULL,
    key_hash bytea NOT NULL,
    times timestamptz[] NOT NULL DEFAULT '{}',
    full_at timestamptz,
    expires_at timestamptz NOT NULL,
    admitted boolean NOT NULL,
    PRIMARY KEY (kind, key_hash)
) WITH (fillfactor = 80);

-- One row per named lease (e.g. 'reconciler'): who holds it, until when.
CREATE TABLE leases (
    name text PRIMARY KEY,
    holder text NOT NULL,
    lease_until timestamptz NOT NULL
);
