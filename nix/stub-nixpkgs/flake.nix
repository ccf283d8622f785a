# A stand-in for nixpkgs, written for this project (no nixpkgs code in it), used by
# .ci/nix-check with `--override-input nixpkgs path:./nix/stub-nixpkgs`. It checks wiring only:
# attribute names, callPackage arguments, app programs, option paths and types of the NixOS
# module, assertions. Every derivation is a /bin/sh stub that is never built. See README.md.
{
  description = "Stub nixpkgs for offline wiring checks of the Tributary flake";

  outputs = { self }: {
    lib = import ./lib.nix;
    legacyPackages = self.lib.genAttrs [ "x86_64-linux" "aarch64-linux" ]
      (system: import ./pkgs.nix { inherit (self) lib; inherit system; });
  };
}
