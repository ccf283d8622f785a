# ExecStart of services.tributary (nix/module.nix): puts the passwords that systemd handed over
# as credentials ($CREDENTIALS_DIRECTORY/{redis,database}-password, from LoadCredential=) into
# REDIS_URL and DATABASE_URL, then runs `tributary worker`. The passwords appear in no unit
# file, no store path and no log line.

# Percent-encodes one URL userinfo component.
urlencode() {
  local LC_ALL=C
  local s=$1 out='' c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      [a-zA-Z0-9.~_-]) out+=$c ;;
      *) printf -v c '%%%02X' "'$c" && out+=$c ;;
    esac
  done
  printf '%s' "$out"
}

# with_password URL PASSWORD: the URL with PASSWORD as its password, keeping its user.
with_password() {
  local url=$1 scheme rest authority path user='' hostport
  scheme=${url%%://*}
  rest=${url#*://}
  authority=${rest%%/*}
  path=${rest:${#authority}}
  hostport=$authority
  if [[ $authority == *@* ]]; then
    user=${authority%@*}
    user=${user%%:*}
    hostport=${authority##*@}
  fi
  printf '%s://%s:%s@%s%s' "$scheme" "$user" "$(urlencode "$2")" "$hostport" "$path"
}

# credential NAME: prints the credential, or fails when systemd passed none by that name.
credential() {
  [[ -n ${CREDENTIALS_DIRECTORY:-} && -r $CREDENTIALS_DIRECTORY/$1 ]] || return 1
  local value
  value=$(<"$CREDENTIALS_DIRECTORY/$1")
  printf '%s' "$value"
}

if [[ ${1:-} == --self-test ]]; then
  # Used by .ci/nix-check: the URL assembly, without any real secret.
  with_password "$2" "$3"
  exit 0
fi

if password=$(credential redis-password); then
  REDIS_URL=$(with_password "${REDIS_URL:?redis.passwordFile is set but REDIS_URL is not}" "$password")
  export REDIS_URL
fi
if password=$(credential database-password); then
  DATABASE_URL=$(with_password "${DATABASE_URL:?database.passwordFile is set but DATABASE_URL is not}" "$password")
  export DATABASE_URL
fi
unset password
# API keys handed over as credentials (services.tributary.secretFiles) are files named by their
# secret id: the env/file secrets provider reads them there.
if [[ -n ${CREDENTIALS_DIRECTORY:-} && -z ${TRIBUTARY_SECRETS_DIR:-} ]]; then
  export TRIBUTARY_SECRETS_DIR=$CREDENTIALS_DIRECTORY
fi

exec tributary worker "$@"
