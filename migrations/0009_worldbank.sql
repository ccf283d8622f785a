-- World Bank Indicators API v2 observations for Venezuela (workflow `worldbank`). One row per
-- (indicator, country, period). The API returns a row for every period in the requested range
-- even when there is no value (Venezuela's recent WDI values are mostly missing): those rows
-- are kept, with value NULL, so that "no data" is distinguishable from "not fetched".
CREATE TABLE worldbank_observations (
    indicator_id   text        NOT NULL,
    country_iso3   text        NOT NULL,
    period         text        NOT NULL,
    year           integer     NOT NULL,
    frequency      text        NOT NULL CHECK (frequency IN ('A', 'Q', 'M')),
    period_start   date        NOT NULL,
    value          numeric,
    unit           text,
    obs_status     text,
    decimal        integer,
    indicator_name text,
    country_name   text,
    ingested_at    timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (indicator_id, country_iso3, period)
);

COMMENT ON TABLE worldbank_observations IS
    'World Bank Indicators API v2 (api.worldbank.org/v2) observations, one row per indicator, '
    'country (ISO3) and period. period is the API''s own text ("2023", "2023Q1", "2023M01"); '
    'year, frequency (A annual, Q quarterly, M monthly) and period_start are parsed from it. '
    'value is NULL where the API has no value. unit and obs_status are NULL when the API gives '
    'an empty string. updated_at moves only when a field changed.';
COMMENT ON COLUMN worldbank_observations.decimal IS
    'The number of decimals the World Bank suggests for display.';

CREATE INDEX worldbank_observations_country_year
    ON worldbank_observations (country_iso3, year);
CREATE INDEX worldbank_observations_indicator_start
    ON worldbank_observations (indicator_id, period_start);
