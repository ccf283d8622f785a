-- FRED (St. Louis Fed) observations: one row per series and observation date. Written by the
-- `fred` workflow (workflows/src/sources/fred.rs); its cursor per series, in ingest_cursors
-- (source 'fred', key = series id), is the last observation date stored.
CREATE TABLE fred_observations (
    series_id      text        NOT NULL,
    date           date        NOT NULL,
    -- NULL where FRED has no value (its "." sentinel, e.g. market holidays). Can be negative.
    value          numeric,
    -- The real-time period of the vintage the current value was read from (ALFRED semantics;
    -- with FRED's defaults, the day it was read). Moves only when the value changes.
    realtime_start date        NOT NULL,
    realtime_end   date        NOT NULL,
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (series_id, date)
);

-- "What changed lately" and incremental exports.
CREATE INDEX fred_observations_updated_at ON fred_observations (updated_at);
-- Cross-series questions for one day ("WTI and Brent on 2020-04-20").
CREATE INDEX fred_observations_date ON fred_observations (date);

COMMENT ON TABLE fred_observations IS
    'FRED series observations (e.g. DCOILWTICO, WTI crude spot, USD/bbl), one row per series and date; value NULL where FRED reports "." (missing).';
COMMENT ON COLUMN fred_observations.value IS
    'The observation in the series'' units (lin); NULL when FRED reports "." (no value). Negative values are real (DCOILWTICO 2020-04-20 = -36.98).';
COMMENT ON COLUMN fred_observations.realtime_start IS
    'Start of the real-time period of the vintage the current value was read from.';
COMMENT ON COLUMN fred_observations.updated_at IS
    'When the value last changed (a re-read that changes nothing leaves it).';
