-- Campaign results (docs/storage.md, "Results").
--
-- `funnel_stage` projects how far a call went (core's FunnelStage::as_i16:
-- 1 requested .. 6 completed), derived from the facts on every create and
-- commit. Rows written before this migration get it from their facts JSON
-- in the store's backfill, which runs right after migrating (so NULL means
-- "not backfilled yet").
ALTER TABLE phone_calls ADD COLUMN funnel_stage INTEGER
    CHECK (funnel_stage BETWEEN 1 AND 6);

-- The results report reads one widget's calls over a period.
CREATE INDEX phone_calls_results_idx
    ON phone_calls (widget_id, created_at, state, funnel_stage, connected_secs);
-- Backfill: the rows still to do.
CREATE INDEX phone_calls_funnel_backfill_idx ON phone_calls (id) WHERE funnel_stage IS NULL;
-- Covered by phone_calls_results_idx.
DROP INDEX phone_calls_widget_created_idx;
