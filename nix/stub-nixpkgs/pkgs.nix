# legacyPackages.<system>: the packages and builders the project's Nix files use, as stubs.
{ lib, system }:
let
  inherit (builtins) attrNames elem isAttrs isFunction isList toJSON;
  nixos = import ./nixos.nix lib;

  # A derivation that is never built. Every string the real one would see is in its
  # environment, so evaluating its drvPath evaluates them all (and their interpolations).
  mkDrv = attrs:
    let
      name = attrs.name or "${attrs.pname}-${attrs.version}";
      env = builtins.mapAttrs (_: v: if isList v || (isAttrs v && !lib.isDerivation v) then toJSON v else v)
        (lib.filterAttrs (n: v: !isFunction v && !elem n [ "passthru" "meta" "name" ]) attrs);
      drv = derivation (env // {
        inherit name system;
        builder = "/bin/sh";
        args = [ "-c" "echo stub of ${name} >$out" ];
      });
    in
    drv // (attrs.passthru or { }) // {
      meta = attrs.meta or { };
      overrideAttrs = f:
        let g = f attrs; in mkDrv (attrs // (if isFunction g then g attrs else g));
    } // lib.filterAttrs (n: _: elem n [ "src" "pname" "version" ]) attrs;

  stub = pname: mainProgram: mkDrv { inherit pname; version = "stub"; meta = { inherit mainProgram; }; };

  # The rustc of the pinned nixos-26.05 is 1.95.0; .ci/nix-check overrides it (with --impure)
  # to check that an older one is refused.
  rustcVersion =
    let v = builtins.getEnv "TRIBUTARY_STUB_RUSTC_VERSION"; in if v == "" then "1.95.0" else v;

  pkgs = {
    inherit lib;
    stdenv.hostPlatform.system = system;

    callPackage = fn: overrides:
      let
        f = if isFunction fn then fn else import fn;
        wanted = builtins.functionArgs f;
        missing = builtins.filter (n: !wanted.${n} && !(pkgs ? ${n}) && !(overrides ? ${n})) (attrNames wanted);
      in
      if missing != [ ] then throw "callPackage ${toString fn}: no package named ${toString missing}"
      else f (builtins.intersectAttrs wanted pkgs // overrides);

    rustc = mkDrv { pname = "rustc"; version = rustcVersion; meta.mainProgram = "rustc"; };
    cargo = stub "cargo" "cargo";
    clippy = stub "clippy" "cargo-clippy";
    rustfmt = stub "rustfmt" "rustfmt";
    rust-analyzer = stub "rust-analyzer" "rust-analyzer";
    redis = stub "redis" "redis-cli";
    postgresql = stub "postgresql" "psql";
    procps = stub "procps" "ps";
    coreutils = stub "coreutils" "ls";
    sqlx-cli = stub "sqlx-cli" "sqlx";
    cargo-nextest = stub "cargo-nextest" "cargo-nextest";
    opentelemetry-collector = stub "opentelemetry-collector" "otelcorecol";
    nixpkgs-fmt = stub "nixpkgs-fmt" "nixpkgs-fmt";
    deadnix = stub "deadnix" "deadnix";

    rustPlatform.buildRustPackage = attrs:
      assert lib.assertMsg (attrs ? pname && attrs ? version && attrs ? src) "buildRustPackage: pname, version and src are required";
      assert lib.assertMsg ((attrs.cargoLock.lockFile or null) != null || attrs ? cargoHash) "buildRustPackage: cargoLock.lockFile or cargoHash is required";
      mkDrv (attrs // { nativeBuildInputs = (attrs.nativeBuildInputs or [ ]) ++ [ pkgs.cargo pkgs.rustc ]; });

    mkShell = attrs: mkDrv (attrs // { name = "nix-shell"; });
    writeText = name: text: mkDrv { inherit name text; };
    writeShellApplication = { name, text, runtimeInputs ? [ ] }:
      mkDrv { inherit name text runtimeInputs; meta.mainProgram = name; };
    runCommand = name: env: buildCommand: mkDrv (env // { inherit name buildCommand; });
    formats.toml = {}: {
      type = lib.types.attrs;
      generate = name: value: pkgs.writeText name (toJSON value);
    };

    testers.runNixOSTest = test:
      assert lib.assertMsg (test ? name && test ? nodes && test ? testScript) "runNixOSTest: name, nodes and testScript are required";
      let
        nodes = builtins.mapAttrs
          (_: m: nixos.evalModules { modules = [ m ]; specialArgs = { inherit pkgs; modulesPath = "/stub/nixos/modules"; }; })
          test.nodes;
        configs = builtins.mapAttrs (_: n: n.config) nodes;
        failed = builtins.concatMap
          (c: map (a: a.message) (builtins.filter (a: !a.assertion) (c.assertions or [ ])))
          (builtins.attrValues configs);
      in
      # Every setting first (an unknown option is reported before any assertion), as NixOS does.
      assert builtins.toJSON configs != "";
      assert lib.assertMsg (failed == [ ]) "runNixOSTest: failed assertions:\n${builtins.concatStringsSep "\n" failed}";
      mkDrv {
        name = "vm-test-run-${test.name}";
        testScript = if isFunction test.testScript then test.testScript { nodes = configs; } else test.testScript;
        nodes = configs;
        passthru = { inherit nodes; };
      };
  };
in
pkgs
