#!/usr/bin/env bash
# Starts the five services as separate processes against one PostgreSQL: the same wiring by
# environment variables as deploy/compose.yaml, for machines without a container engine.
#
#   deploy/run-local.sh            # DATABASE_URL defaults to the local server, database `callback`
#
# Stops every service on Ctrl-C / SIGTERM. Logs go to target/run-local/<service>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/callback}"
export DATABASE_URL
export CALLBACK_SCHEDULING_ADDR="${CALLBACK_SCHEDULING_ADDR:-127.0.0.1:50051}"
export CALLBACK_CALL_LOGGING_ADDR="${CALLBACK_CALL_LOGGING_ADDR:-127.0.0.1:50052}"
export CALLBACK_COMPLAINT_ROUTING_ADDR="${CALLBACK_COMPLAINT_ROUTING_ADDR:-127.0.0.1:50053}"
export CALLBACK_ANALYTICS_ADDR="${CALLBACK_ANALYTICS_ADDR:-127.0.0.1:50054}"
export CALLBACK_INTEGRATION_GATEWAY_ADDR="${CALLBACK_INTEGRATION_GATEWAY_ADDR:-127.0.0.1:50055}"

services=(scheduling call-logging complaint-routing analytics integration-gateway)
cargo build --release --quiet --bin callbackd $(printf -- '--bin callback-%s ' "${services[@]}")

# Create the database when it is missing (needs psql; otherwise create it yourself).
if command -v psql >/dev/null 2>&1; then
  db="${DATABASE_URL##*/}"; db="${db%%\?*}"
  admin_url="${DATABASE_URL%/*}/postgres"
  if ! psql "$admin_url" -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    psql "$admin_url" -qc "CREATE DATABASE \"$db\""
  fi
fi

mkdir -p target/run-local
# TLS and tokens: unless security settings are given, trial credentials (a local CA, tokens for
# tenant `demo` in target/run-local/credentials/tokens/).
if [ -z "${CALLBACK_TLS_CERT:-}${CALLBACK_JWKS_FILE:-}${CALLBACK_TLS:-}" ]; then
  while IFS='=' read -r key value; do export "$key=$value"; done \
    < <(target/release/callbackd credentials target/run-local/credentials)
  echo "trial credentials in target/run-local/credentials (tokens/ for tenant demo)"
fi
scheme=https
[ "${CALLBACK_TLS:-on}" = off ] && scheme=http
pids=()
stop() {
  trap - INT TERM EXIT
  if [ ${#pids[@]} -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop INT TERM EXIT

for service in "${services[@]}"; do
  "target/release/callback-$service" >"target/run-local/$service.log" 2>&1 &
  pids+=($!)
done

addrs=("$CALLBACK_SCHEDULING_ADDR" "$CALLBACK_CALL_LOGGING_ADDR" "$CALLBACK_COMPLAINT_ROUTING_ADDR" "$CALLBACK_ANALYTICS_ADDR" "$CALLBACK_INTEGRATION_GATEWAY_ADDR")
for i in "${!services[@]}"; do
  for _ in $(seq 1 100); do
    if target/release/callbackd health "$scheme://${addrs[$i]}" >/dev/null 2>&1; then
      echo "${services[$i]} serving on ${addrs[$i]}"
      continue 2
    fi
    sleep 0.2
  done
  echo "${services[$i]} did not become healthy; see target/run-local/${services[$i]}.log" >&2
  exit 1
done
echo "HL7 v2 over MLLP on ${CALLBACK_MLLP_ADDR:-127.0.0.1:2575}, FHIR and webhooks on $scheme://${CALLBACK_INTEGRATION_HTTP_ADDR:-127.0.0.1:8090}"
echo "all services up; Ctrl-C stops them"
wait "${pids[@]}"
