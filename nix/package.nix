# The `tributary` binary (workflows/src/main.rs), built from Cargo.lock.
#
# `runTests = true` also runs `cargo test --workspace`: the tests start their own throwaway
# redis-server and PostgreSQL on free loopback ports (the Linux build sandbox has `lo`), from
# the binaries named by TRIBUTARY_REDIS_SERVER and TRIBUTARY_PG_BINDIR. The build user is not
# root, so PostgreSQL runs as the build user.
{ lib
, rustPlatform
, rustc
, redis
, postgresql
, procps
, coreutils
, runTests ? false
}:
let
  workspace = (lib.importTOML ../Cargo.toml).workspace.package;

  # Only what the build reads. `sqlx::migrate!("../migrations")` embeds migrations/ at compile
  # time, so it must be in the source; `.sqlx/` (offline query data) too, once there is one.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../engine
      ../workflows
      ../migrations
      (lib.fileset.maybeMissing ../.sqlx)
    ];
  };
in
assert lib.assertMsg (lib.versionAtLeast rustc.version workspace.rust-version)
  "tributary needs Rust >= ${workspace.rust-version} (Cargo.toml rust-version); this nixpkgs has rustc ${rustc.version}";
rustPlatform.buildRustPackage {
  pname = "tributary";
  inherit (workspace) version;
  inherit src;

  cargoLock.lockFile = ../Cargo.lock;

  cargoBuildFlags = [ "--package" "tributary-workflows" "--bin" "tributary" ];
  cargoTestFlags = [ "--workspace" ];

  # No `query!` macros today; this keeps a stray DATABASE_URL from sending the build online.
  env.SQLX_OFFLINE = "true";

  doCheck = runTests;
  nativeCheckInputs = [ redis postgresql procps coreutils ];
  # rotel, the real collector of one tracing test, is a PyPI package and not in nixpkgs; the
  # other tracing tests' in-process OTLP receiver covers export in the sandbox.
  checkFlags = [ "--skip=spans_reach_a_real_collector_over_otlp_http" ];
  preCheck = ''
    export TRIBUTARY_REDIS_SERVER=${lib.getExe' redis "redis-server"}
    export TRIBUTARY_PG_BINDIR=${lib.getBin postgresql}/bin
    export HOME=$TMPDIR
  '';

  meta = {
    description = "Durable workflow engine: typed step graphs on Redis Streams, checkpointed in PostgreSQL";
    license = lib.licenses.asl20;
    mainProgram = "tributary";
    platforms = lib.platforms.linux;
  };
}
