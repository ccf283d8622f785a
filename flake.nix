{
  description = "Tributary: durable workflows on Redis Streams with PostgreSQL checkpoints";

  # nixos-26.05 ships rustc 1.95.0; the workspace needs >= 1.94 (sqlx 0.9).
  # nix/package.nix asserts this at evaluation time against Cargo.toml's rust-version.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      # Linux only: the NixOS module and the VM test are Linux, and so is every deployment.
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        engine = pkgs.callPackage ./nix/package.nix { };
        default = engine;
      });

      apps = forAllSystems (pkgs: rec {
        engine = import ./nix/app.nix {
          inherit pkgs;
          tributary = self.packages.${pkgs.stdenv.hostPlatform.system}.engine;
        };
        default = engine;
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.callPackage ./nix/devshell.nix { };
      });

      checks = forAllSystems (pkgs: import ./nix/checks.nix { inherit pkgs self; });

      nixosModules.default = import ./nix/module.nix self;

      # The same formatter, at the same version (1.3.0), that `.ci/nix-check` runs offline.
      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
