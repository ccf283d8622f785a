# `nix run .#engine`: `tributary dev` with nixpkgs' redis-server and PostgreSQL.
# With no REDIS_URL / DATABASE_URL it starts both under its state directory (`.tributary` in
# the current directory; `--state-dir` or TRIBUTARY_STATE_DIR to move it), applies the
# migrations and runs a worker; with them set it uses those servers.
{ pkgs, tributary }:
let
  inherit (pkgs) lib;
  wrapper = pkgs.writeShellApplication {
    name = "tributary-engine";
    runtimeInputs = [ tributary ];
    text = ''
      export TRIBUTARY_REDIS_SERVER="''${TRIBUTARY_REDIS_SERVER:-${lib.getExe' pkgs.redis "redis-server"}}"
      export TRIBUTARY_PG_BINDIR="''${TRIBUTARY_PG_BINDIR:-${lib.getBin pkgs.postgresql}/bin}"
      exec tributary dev "$@"
    '';
  };
in
{
  type = "app";
  program = lib.getExe wrapper;
  meta.description = "Run the whole engine (tributary dev), with private Redis and PostgreSQL unless REDIS_URL/DATABASE_URL are set";
}
