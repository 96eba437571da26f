-- The do-not-call list (issue 8): keyed hashes of numbers that asked never
-- to be called again. No phone number is stored (see docs/core.md).
CREATE TABLE do_not_call (
    hash       TEXT PRIMARY KEY NOT NULL CHECK (length(hash) = 64), -- HMAC-SHA256, hex
    source     TEXT NOT NULL,                                      -- keypress | file | admin
    created_at TEXT NOT NULL
) STRICT;
