-- Daily cap per called number (CallStore::count_recent_calls_to): the
-- calls created for one activist number over the last 24 h. Its leading
-- column also serves erasure requests by number, so it replaces
-- phone_calls_from_phone_number_idx (same partial condition: erased rows
-- hold placeholders).
DROP INDEX IF EXISTS phone_calls_from_phone_number_idx;
CREATE INDEX phone_calls_activist_created_idx ON phone_calls (from_phone_number, created_at)
    WHERE erased_at IS NULL;
