-- ReliefWeb reports about Venezuela (workflow `reliefweb`, API v2 `/reports`). One row per
-- report, keyed on ReliefWeb's report id; an edited report (its `date.changed` moves) updates
-- its row in place. Taxonomy lists (countries, sources, themes, ...) are kept as text arrays
-- of their names or codes, in the API's order.
CREATE TABLE reliefweb_reports (
    id                   bigint      PRIMARY KEY,
    title                text,
    status               text,
    url                  text,
    url_alias            text,
    origin               text,
    date_created         timestamptz,
    date_changed         timestamptz NOT NULL,
    date_original        timestamptz,
    primary_country_iso3 text,
    primary_country_name text,
    country_iso3         text[]      NOT NULL DEFAULT '{}',
    sources              text[]      NOT NULL DEFAULT '{}',
    source_shortnames    text[]      NOT NULL DEFAULT '{}',
    formats              text[]      NOT NULL DEFAULT '{}',
    themes               text[]      NOT NULL DEFAULT '{}',
    languages            text[]      NOT NULL DEFAULT '{}',
    disaster_types       text[]      NOT NULL DEFAULT '{}',
    body                 text,
    ingested_at          timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE reliefweb_reports IS
    'ReliefWeb (api.reliefweb.int v2) reports tagged with Venezuela, one row per report id; '
    'country_iso3 lists every tagged country (lower-case iso3, as the API gives it), '
    'primary_country_iso3 the main one; languages are ISO 639-1 codes; body is the plain-text '
    'body (NULL when the API gave none). updated_at moves only when a field changed.';
COMMENT ON COLUMN reliefweb_reports.date_changed IS
    'Last edit on ReliefWeb; the ingestion cursor is the greatest value stored.';
COMMENT ON COLUMN reliefweb_reports.date_original IS
    'Publication date by the original source.';

CREATE INDEX reliefweb_reports_date_changed ON reliefweb_reports (date_changed);
CREATE INDEX reliefweb_reports_date_original ON reliefweb_reports (date_original);
CREATE INDEX reliefweb_reports_primary_country ON reliefweb_reports (primary_country_iso3);
CREATE INDEX reliefweb_reports_country_iso3 ON reliefweb_reports USING gin (country_iso3);
CREATE INDEX reliefweb_reports_themes ON reliefweb_reports USING gin (themes);
