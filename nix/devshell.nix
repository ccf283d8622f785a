# `nix develop`: the toolchain, the servers the tests start, sqlx-cli, cargo-nextest, and an
# OpenTelemetry Collector (`otelcol-dev` runs it with OTLP on 4317/4318, printing spans).
{ lib
, mkShell
, writeShellApplication
, writeText
, cargo
, rustc
, clippy
, rustfmt
, rust-analyzer
, redis
, postgresql
, sqlx-cli
, cargo-nextest
, opentelemetry-collector
}:
let
  collectorConfig = writeText "otelcol-dev.yaml" ''
    receivers:
      otlp:
        protocols:
          grpc: { endpoint: "127.0.0.1:4317" }
          http: { endpoint: "127.0.0.1:4318" }
    exporters:
      debug: { verbosity: detailed }
    service:
      pipelines:
        traces: { receivers: [otlp], exporters: [debug] }
  '';
  otelcolDev = writeShellApplication {
    name = "otelcol-dev";
    runtimeInputs = [ opentelemetry-collector ];
    text = ''exec ${lib.getExe opentelemetry-collector} --config=file:${collectorConfig} "$@"'';
  };
in
mkShell {
  packages = [
    cargo
    rustc
    clippy
    rustfmt
    rust-analyzer
    redis
    postgresql
    sqlx-cli
    cargo-nextest
    opentelemetry-collector
    otelcolDev
  ];
  env = {
    TRIBUTARY_REDIS_SERVER = lib.getExe' redis "redis-server";
    TRIBUTARY_PG_BINDIR = "${lib.getBin postgresql}/bin";
  };
}
