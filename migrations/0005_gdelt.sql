-- GDELT 2.0 Events: the 15-minute export batches the `gdelt` workflow has dealt with, and the
-- events of those batches that involve Venezuela (an actor whose CAMEO country is VEN, or a
-- place whose FIPS country is VE). Column names follow the GDELT Event Codebook V2.0 in
-- snake_case; an empty field in the file is NULL here.

CREATE TABLE gdelt_batches (
    batch_at     timestamptz NOT NULL PRIMARY KEY,
    status       text        NOT NULL CHECK (status IN ('loaded', 'skipped')),
    rows_in_file integer     CHECK (rows_in_file >= 0),
    rows_kept    integer     NOT NULL DEFAULT 0 CHECK (rows_kept >= 0),
    -- Lines without 61 columns, skipped (a batch with more than 1% of them fails instead).
    rows_skipped integer     NOT NULL DEFAULT 0 CHECK (rows_skipped >= 0),
    reason       text,
    url          text        NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now(),
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'loaded') = (rows_in_file IS NOT NULL)),
    CHECK ((status = 'skipped') = (reason IS NOT NULL))
);

COMMENT ON TABLE gdelt_batches IS
    'One row per GDELT 2.0 events export batch (YYYYMMDDHHMMSS.export.CSV.zip) the gdelt workflow '
    'has dealt with. loaded: the file was read, rows_in_file rows, rows_kept of them about '
    'Venezuela. skipped: the file was still missing (HTTP 404) after every attempt; reason says '
    'why. A skipped batch becomes loaded when a later run (a backfill of its window) finds it. '
    'loaded_at: when the current status was recorded.';
COMMENT ON COLUMN gdelt_batches.batch_at IS 'The batch timestamp (UTC, on a 15-minute boundary).';

CREATE INDEX gdelt_batches_skipped ON gdelt_batches (batch_at) WHERE status = 'skipped';

CREATE TABLE gdelt_events (
    global_event_id          bigint           NOT NULL PRIMARY KEY,
    event_date               date             NOT NULL,
    month_year               integer,
    year                     integer,
    fraction_date            double precision,
    actor1_code              text,
    actor1_name              text,
    actor1_country_code      text,
    actor1_known_group_code  text,
    actor1_ethnic_code       text,
    actor1_religion1_code    text,
    actor1_religion2_code    text,
    actor1_type1_code        text,
    actor1_type2_code        text,
    actor1_type3_code        text,
    actor2_code              text,
    actor2_name              text,
    actor2_country_code      text,
    actor2_known_group_code  text,
    actor2_ethnic_code       text,
    actor2_religion1_code    text,
    actor2_religion2_code    text,
    actor2_type1_code        text,
    actor2_type2_code        text,
    actor2_type3_code        text,
    is_root_event            boolean,
    event_code               text,
    event_base_code          text,
    event_root_code          text,
    quad_class               smallint,
    goldstein_scale          double precision,
    num_mentions             integer,
    num_sources              integer,
    num_articles             integer,
    avg_tone                 double precision,
    actor1_geo_type          smallint,
    actor1_geo_full_name     text,
    actor1_geo_country_code  text,
    actor1_geo_adm1_code     text,
    actor1_geo_adm2_code     text,
    actor1_geo_lat           double precision,
    actor1_geo_long          double precision,
    actor1_geo_feature_id    text,
    actor2_geo_type          smallint,
    actor2_geo_full_name     text,
    actor2_geo_country_code  text,
    actor2_geo_adm1_code     text,
    actor2_geo_adm2_code     text,
    actor2_geo_lat           double precision,
    actor2_geo_long          double precision,
    actor2_geo_feature_id    text,
    action_geo_type          smallint,
    action_geo_full_name     text,
    action_geo_country_code  text,
    action_geo_adm1_code     text,
    action_geo_adm2_code     text,
    action_geo_lat           double precision,
    action_geo_long          double precision,
    action_geo_feature_id    text,
    date_added               timestamptz      NOT NULL,
    source_url               text,
    batch_at                 timestamptz      NOT NULL REFERENCES gdelt_batches (batch_at),
    ingested_at              timestamptz      NOT NULL DEFAULT now(),
    updated_at               timestamptz      NOT NULL DEFAULT now()
);

COMMENT ON TABLE gdelt_events IS
    'GDELT 2.0 events about Venezuela (Actor1/Actor2CountryCode = VEN, or Actor1Geo/Actor2Geo/'
    'ActionGeo_CountryCode = VE by default), one row per GLOBALEVENTID, from the 15-minute '
    'export files. event_date is SQLDATE (when the event happened, inferred from the text, can '
    'be long before date_added); date_added is DATEADDED (when GDELT first saw it, UTC). CAMEO '
    'codes are text (event_code ''043'' keeps its leading zero); geo codes are FIPS 10-4, not ISO. '
    'batch_at: the export batch the row came from.';

CREATE INDEX gdelt_events_event_date ON gdelt_events (event_date);
CREATE INDEX gdelt_events_date_added ON gdelt_events (date_added);
CREATE INDEX gdelt_events_batch_at ON gdelt_events (batch_at);
CREATE INDEX gdelt_events_event_root_code ON gdelt_events (event_root_code, event_date);
