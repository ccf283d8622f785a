# The NixOS VM test (`checks.<system>.nixos`): the module with a local Redis (password from a
# credential) and PostgreSQL, and an OpenTelemetry Collector printing the spans it receives.
# It starts a workflow, waits for it to complete, and looks for the run's spans in the
# collector's log.
self:
let
  secretDir = "/run/tributary-test";
in
{
  name = "tributary";

  nodes.machine = { pkgs, ... }: {
    imports = [ self.nixosModules.default ];

    virtualisation.memorySize = 2048;
    environment.systemPackages = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];

    # A Redis password made at boot, so that it is in no store path; it contains characters
    # that must be percent-encoded in a URL.
    systemd.services.tributary-test-secret = {
      wantedBy = [ "multi-user.target" ];
      requiredBy = [ "redis-tributary.service" "tributary.service" ];
      before = [ "redis-tributary.service" "tributary.service" ];
      serviceConfig = { Type = "oneshot"; RemainAfterExit = true; UMask = "0077"; };
      script = ''
        mkdir -p ${secretDir}
        printf 'a/b+c%%d:%s' "$(head -c 12 /dev/urandom | base64)" > ${secretDir}/redis-password
      '';
    };

    services.tributary = {
      enable = true;
      redis = { createLocally = true; passwordFile = "${secretDir}/redis-password"; };
      database.createLocally = true;
      otlp.endpoint = "http://127.0.0.1:4318";
      settings.worker.concurrency = 4;
    };

    services.opentelemetry-collector = {
      enable = true;
      settings = {
        receivers.otlp.protocols.http.endpoint = "127.0.0.1:4318";
        exporters.debug.verbosity = "detailed";
        service.pipelines.traces = { receivers = [ "otlp" ]; exporters = [ "debug" ]; };
      };
    };
  };

  testScript = ''
    from urllib.parse import quote

    start_all()
    machine.wait_for_unit("opentelemetry-collector.service")
    machine.wait_for_open_port(4318)
    machine.wait_for_unit("redis-tributary.service")
    machine.wait_for_unit("postgresql.target")
    machine.wait_for_unit("tributary.service")

    with subtest("the service got its password as a credential, not in its unit"):
        machine.fail("systemctl show tributary.service | grep -F 'a/b+c'")
        machine.fail("systemctl cat tributary.service | grep -F 'a/b+c'")

    with subtest("a workflow runs to completion"):
        password = machine.succeed("cat ${secretDir}/redis-password").strip()
        redis_url = "redis://:" + quote(password, safe="") + "@127.0.0.1:6379"
        # Peer authentication: the client runs as the service's (dynamic) user.
        out = machine.succeed(
            "runuser -u tributary -- env"
            f" REDIS_URL='{redis_url}'"
            " DATABASE_URL='postgres://tributary@localhost/tributary?host=/run/postgresql'"
            " OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318"
            " tributary start hello --wait --timeout 2m"
        )
        assert "Hello World" in out, out

    with subtest("the collector received the run's spans"):
        # Needs the engine's OTLP export (the standard OTEL_* variables).
        machine.wait_until_succeeds(
            "journalctl -u opentelemetry-collector.service --no-pager | grep -q 'workflow.step'",
            timeout=120,
        )
        machine.succeed("journalctl -u opentelemetry-collector.service --no-pager | grep -q 'workflow.run'")
        machine.succeed("journalctl -u opentelemetry-collector.service --no-pager | grep -q 'tributary'")
  '';
}
