# services.tributary: `tributary worker` as a hardened systemd service.
#
# Secrets never enter the Nix store: passwords are files read by systemd (LoadCredential=) and
# put into REDIS_URL / DATABASE_URL by tributary-start.sh when the service starts; anything else
# secret can come from `environmentFile`. The URLs set here must not contain a password.
self:
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkEnableOption mkOption mkIf types optional optionals;
  cfg = config.services.tributary;
  toml = pkgs.formats.toml { };

  # An absolute path outside the Nix store, read at run time; never a Nix path literal.
  runtimePath = types.nullOr types.str;
  isRuntimePath = p: p == null || (lib.hasPrefix "/" p && !lib.hasPrefix "${builtins.storeDir}/" p);
  # scheme://user:password@...: a password inline in a URL would end up in the store.
  hasInlinePassword = url: url != null && builtins.match "[a-z+]+://[^/@]*:[^/@]*@.*" url != null;

  start = pkgs.writeShellApplication {
    name = "tributary-start";
    runtimeInputs = [ cfg.package ];
    text = builtins.readFile ./tributary-start.sh;
  };

  settingsEnvironment = {
    RUST_LOG = cfg.logLevel;
    TRIBUTARY_CONFIG = if cfg.settings == { } then null else "${toml.generate "tributary.toml" cfg.settings}";
    REDIS_URL = cfg.redis.url;
    DATABASE_URL = cfg.database.url;
    OTEL_EXPORTER_OTLP_ENDPOINT = cfg.otlp.endpoint;
    OTEL_EXPORTER_OTLP_PROTOCOL = if cfg.otlp.endpoint == null then null else cfg.otlp.protocol;
    OTEL_SERVICE_NAME = cfg.otlp.serviceName;
  };
  environment = lib.filterAttrs (_: v: v != null) settingsEnvironment // cfg.extraEnvironment;
in
{
  options.services.tributary = {
    enable = mkEnableOption "the Tributary workflow engine's worker";

    package = mkOption {
      type = types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      defaultText = lib.literalExpression "tributary.packages.\${system}.default";
      description = "The package providing the `tributary` binary.";
    };

    settings = mkOption {
      inherit (toml) type;
      default = { };
      example = { key-prefix = "tributary-prod"; worker.concurrency = 64; retention.keep = "14d"; };
      description = ''
        The TOML configuration file (docs/configuration.md), passed as TRIBUTARY_CONFIG.
        It lands in the Nix store: never put `redis-url` or `database-url` with a password here.
      '';
    };

    logLevel = mkOption {
      type = types.str;
      default = "info";
      description = "RUST_LOG: the log filter.";
    };

    redis = {
      url = mkOption {
        type = types.nullOr types.str;
        default = if cfg.redis.createLocally then "redis://127.0.0.1:${toString cfg.redis.port}" else null;
        defaultText = lib.literalExpression ''if createLocally then "redis://127.0.0.1:''${port}" else null'';
        example = "rediss://10.0.0.3:6378";
        description = "REDIS_URL without its password (see `passwordFile`).";
      };
      passwordFile = mkOption {
        type = runtimePath;
        default = null;
        example = "/run/secrets/tributary-redis-password";
        description = "A file holding the Redis password, read by systemd at start (LoadCredential).";
      };
      createLocally = mkOption {
        type = types.bool;
        default = false;
        description = "Run a Redis server for Tributary on this machine (`redis-tributary.service`, on 127.0.0.1).";
      };
      port = mkOption {
        type = types.port;
        default = 6379;
        description = "The port of the local Redis server (with `createLocally`).";
      };
    };

    database = {
      url = mkOption {
        type = types.nullOr types.str;
        default =
          if cfg.database.createLocally
          then "postgres://${cfg.database.user}@localhost/${cfg.database.name}?host=/run/postgresql"
          else null;
        defaultText = lib.literalExpression ''if createLocally then "postgres://tributary@localhost/tributary?host=/run/postgresql" else null'';
        example = "postgres://tributary@10.0.0.5:5432/tributary?sslmode=require";
        description = "DATABASE_URL without its password (see `passwordFile`).";
      };
      passwordFile = mkOption {
        type = runtimePath;
        default = null;
        example = "/run/secrets/tributary-db-password";
        description = "A file holding the PostgreSQL password, read by systemd at start (LoadCredential).";
      };
      createLocally = mkOption {
        type = types.bool;
        default = false;
        description = ''
          Enable PostgreSQL on this machine with a database and a role for Tributary, reached
          over the Unix socket with peer authentication (no password).
        '';
      };
      name = mkOption {
        type = types.str;
        default = "tributary";
        description = "The local database's name (with `createLocally`).";
      };
      user = mkOption {
        type = types.str;
        default = "tributary";
        description = "The PostgreSQL role, and the service's (dynamic) system user.";
      };
    };

    otlp = {
      endpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "http://127.0.0.1:4318";
        description = "OTEL_EXPORTER_OTLP_ENDPOINT: where spans are exported over OTLP; no export when null.";
      };
      protocol = mkOption {
        type = types.enum [ "grpc" "http/protobuf" ];
        default = "http/protobuf";
        description = "OTEL_EXPORTER_OTLP_PROTOCOL.";
      };
      serviceName = mkOption {
        type = types.str;
        default = "tributary";
        description = "OTEL_SERVICE_NAME.";
      };
    };

    environmentFile = mkOption {
      type = runtimePath;
      default = null;
      example = "/run/secrets/tributary.env";
      description = ''
        A file of VAR=value lines read by systemd at start (EnvironmentFile), e.g. a complete
        REDIS_URL or DATABASE_URL written by a secrets manager. It overrides the settings above.
      '';
    };

    secretFiles = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { "fred-api-key" = "/run/secrets/fred-api-key"; };
      description = ''
        API keys for the env/file secrets provider, by secret id: each file is handed to the
        service as a systemd credential (LoadCredential), and the service reads its secrets from
        the credentials directory (TRIBUTARY_SECRETS_DIR). Leave empty with GCP Secret Manager
        (settings.secrets.provider = "gcp").
      '';
    };

    extraEnvironment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { TRIBUTARY_WORKER_CONCURRENCY = "64"; };
      description = "More environment variables (no secrets: they land in the Nix store).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.redis.url != null || cfg.environmentFile != null;
        message = "services.tributary: set redis.url, redis.createLocally, or REDIS_URL in environmentFile.";
      }
      {
        assertion = cfg.database.url != null || cfg.environmentFile != null;
        message = "services.tributary: set database.url, database.createLocally, or DATABASE_URL in environmentFile.";
      }
      {
        assertion = !(hasInlinePassword cfg.redis.url || hasInlinePassword cfg.database.url);
        message = "services.tributary: a URL contains a password, which would be copied into the Nix store; use redis.passwordFile / database.passwordFile.";
      }
      {
        assertion = lib.all isRuntimePath ([ cfg.redis.passwordFile cfg.database.passwordFile cfg.environmentFile ] ++ builtins.attrValues cfg.secretFiles);
        message = "services.tributary: passwordFile, environmentFile and secretFiles must be absolute paths outside the Nix store.";
      }
      {
        assertion = cfg.database.createLocally -> cfg.database.name == cfg.database.user;
        message = "services.tributary: with database.createLocally, database.name must equal database.user (ensureDBOwnership).";
      }
    ];

    services.redis.servers.tributary = mkIf cfg.redis.createLocally {
      enable = true;
      bind = "127.0.0.1";
      inherit (cfg.redis) port;
      requirePassFile = cfg.redis.passwordFile;
    };

    services.postgresql = mkIf cfg.database.createLocally {
      enable = true;
      ensureDatabases = [ cfg.database.name ];
      ensureUsers = [{ name = cfg.database.user; ensureDBOwnership = true; }];
    };

    systemd.services.tributary = {
      description = "Tributary workflow worker";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ]
        ++ optional cfg.redis.createLocally "redis-tributary.service"
        ++ optional cfg.database.createLocally "postgresql.target";
      requires = optional cfg.redis.createLocally "redis-tributary.service"
        ++ optional cfg.database.createLocally "postgresql.target";
      inherit environment;

      serviceConfig = {
        ExecStart = lib.getExe start;
        Restart = "on-failure";
        RestartSec = "5s";
        # SIGTERM drains in-flight steps for worker.shutdown-grace (30 s by default).
        TimeoutStopSec = lib.mkDefault "90s";

        DynamicUser = true;
        User = cfg.database.user;
        Group = cfg.database.user;
        StateDirectory = "tributary";
        WorkingDirectory = "/var/lib/tributary";
        UMask = "0077";
        LoadCredential =
          optionals (cfg.redis.passwordFile != null) [ "redis-password:${cfg.redis.passwordFile}" ]
          ++ optionals (cfg.database.passwordFile != null) [ "database-password:${cfg.database.passwordFile}" ]
          ++ map (id: "${id}:${cfg.secretFiles.${id}}") (builtins.attrNames cfg.secretFiles);
        EnvironmentFile = optional (cfg.environmentFile != null) cfg.environmentFile;

        # Hardening: it needs only outbound TCP (and the PostgreSQL Unix socket).
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        ProtectHostname = true;
        ProtectClock = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectProc = "invisible";
        ProcSubset = "pid";
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        RemoveIPC = true;
        LockPersonality = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" "~@privileged" ];
      };
    };
  };
}
