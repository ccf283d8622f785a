# `nix flake check`: the build with the whole test suite (Redis and PostgreSQL started inside
# the build sandbox), clippy, rustfmt, the Nix lints, and the NixOS VM test.
{ pkgs, self }:
let
  inherit (pkgs) lib;
  engine = self.packages.${pkgs.stdenv.hostPlatform.system}.engine;
in
{
  engine = pkgs.callPackage ./package.nix { runTests = true; };

  clippy = engine.overrideAttrs (old: {
    pname = "tributary-clippy";
    nativeBuildInputs = old.nativeBuildInputs ++ [ pkgs.clippy ];
    buildPhase = ''
      runHook preBuild
      cargo clippy --workspace --all-targets --locked --offline -- -D warnings
      runHook postBuild
    '';
    doCheck = false;
    installPhase = "touch $out";
  });

  rustfmt = pkgs.runCommand "tributary-rustfmt"
    {
      nativeBuildInputs = [ pkgs.cargo pkgs.rustfmt ];
    } ''
    export HOME=$TMPDIR
    cp -r ${engine.src} src && chmod -R u+w src && cd src
    cargo fmt --all --check
    touch $out
  '';

  nix-lint = pkgs.runCommand "tributary-nix-lint"
    {
      nativeBuildInputs = [ pkgs.nixpkgs-fmt pkgs.deadnix ];
      src = lib.fileset.toSource {
        root = ../.;
        fileset = lib.fileset.unions [ ../flake.nix ./. ];
      };
    } ''
    cd $src
    nixpkgs-fmt --check flake.nix nix
    deadnix --fail flake.nix nix
    touch $out
  '';

  nixos = pkgs.testers.runNixOSTest (import ./vm-test.nix self);
}
