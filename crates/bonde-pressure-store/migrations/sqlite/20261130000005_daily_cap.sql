-- Daily cap per called number (CallStore::count_recent_calls_to): the
-- calls created for one activist number over the last 24 h.
CREATE INDEX phone_calls_activist_created_idx ON phone_calls (from_phone_number, created_at);
