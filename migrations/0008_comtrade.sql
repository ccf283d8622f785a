-- UN Comtrade trade flows with Venezuela (its own reports, reporterCode 862, and its partners'
-- mirror reports, partnerCode 862). Written by the `comtrade` workflow
-- (workflows/src/sources/comtrade.rs). Column names are the API's, in snake_case.
CREATE TABLE comtrade_flows (
    type_code                    text        NOT NULL,  -- C goods, S services
    freq_code                    text        NOT NULL,  -- A annual, M monthly
    period                       text        NOT NULL,  -- YYYY or YYYYMM
    ref_date                     date        NOT NULL,  -- first day of the period (refPeriodId)
    ref_year                     integer     NOT NULL,
    ref_month                    integer     NOT NULL,  -- 1-12; 52 for annual rows (the API's convention)
    reporter_code                integer     NOT NULL,  -- UN M49 (862 Venezuela, 842 USA, 0 World)
    reporter_iso                 text,
    reporter_desc                text,
    flow_code                    text        NOT NULL,  -- M import, X export, RM, RX
    flow_desc                    text,
    partner_code                 integer     NOT NULL,
    partner_iso                  text,
    partner_desc                 text,
    partner2_code                integer     NOT NULL,
    partner2_iso                 text,
    partner2_desc                text,
    classification_code          text        NOT NULL,  -- H0..H6, S1..S4, as reported
    classification_search_code   text,
    is_original_classification   boolean,
    cmd_code                     text        NOT NULL,  -- TOTAL, or an HS code (leading zeros kept)
    cmd_desc                     text,
    aggr_level                   integer,
    is_leaf                      boolean,
    customs_code                 text        NOT NULL,  -- C00 = all procedures
    customs_desc                 text,
    mos_code                     text,
    mot_code                     integer     NOT NULL,  -- 0 = all modes of transport
    mot_desc                     text,
    qty_unit_code                integer,
    qty_unit_abbr                text,
    qty                          numeric,
    is_qty_estimated             boolean,
    alt_qty_unit_code            integer,
    alt_qty_unit_abbr            text,
    alt_qty                      numeric,
    is_alt_qty_estimated         boolean,
    net_wgt                      numeric,                -- kg
    is_net_wgt_estimated         boolean,
    gross_wgt                    numeric,                -- kg
    is_gross_wgt_estimated       boolean,
    cif_value                    numeric,                -- USD; NULL when not reported
    fob_value                    numeric,                -- USD; NULL when not reported
    primary_value                numeric,                -- USD: CIF for imports, FOB for exports
    legacy_estimation_flag       integer,
    is_reported                  boolean,
    is_aggregate                 boolean,
    ingested_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (type_code, freq_code, period, reporter_code, partner_code, partner2_code,
                 flow_code, cmd_code, customs_code, mot_code, classification_code)
);

-- Mirror questions ("who imports from Venezuela, by year") and time series by date.
CREATE INDEX comtrade_flows_partner ON comtrade_flows (partner_code, ref_date);
CREATE INDEX comtrade_flows_reporter ON comtrade_flows (reporter_code, ref_date);
CREATE INDEX comtrade_flows_updated_at ON comtrade_flows (updated_at);

COMMENT ON TABLE comtrade_flows IS
    'UN Comtrade trade flows (data/v1/get) reported by or about Venezuela (M49 862), one row per API record on its natural key; values in USD, weights in kg, NULL where not reported.';
COMMENT ON COLUMN comtrade_flows.primary_value IS
    'Trade value in USD: CIF for imports, FOB for exports (the API''s primaryValue).';

-- Which (query, period) pairs the comtrade workflow has fetched, and how many records each
-- returned: this table is the source's cursor. A period with records is not fetched again
-- unless it is among the most recent (which partners keep revising); an empty one is asked
-- again on the next run.
CREATE TABLE comtrade_loaded_periods (
    -- The query: type/frequency/classification and filters, e.g.
    -- 'C/A/HS reporterCode=* partnerCode=862 cmdCode=TOTAL flowCode=M,X'.
    query       text        NOT NULL,
    period      text        NOT NULL,
    records     integer     NOT NULL,
    last_run_id uuid,
    loaded_at   timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (query, period)
);

COMMENT ON TABLE comtrade_loaded_periods IS
    'The comtrade workflow''s cursor: each (query, period) fetched, with its record count.';
