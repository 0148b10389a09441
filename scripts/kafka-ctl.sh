#!/usr/bin/env bash
# Stops and restarts only the Kafka broker started by scripts/test-services.sh, for fault tests
# ("Kafka stopped and restarted mid-run"). The restarted broker reuses the run directory, its
# formatted storage, its configuration and therefore the same port, so clients configured with
# KAFKA_BROKERS reconnect to it.
#
#   scripts/kafka-ctl.sh stop     TERM the broker (KILL after a timeout); idempotent
#   scripts/kafka-ctl.sh kill     KILL the broker at once (a crash); idempotent
#   scripts/kafka-ctl.sh start    start it again and wait until it answers; idempotent
#   scripts/kafka-ctl.sh status   "running (pid N)" or "stopped"; exit 1 when stopped
#
# Overrides: KAFKA_VERSION (must match the 'up' that created the run dir), TEST_SERVICES_TIMEOUT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/test-services"
RUN="$CACHE/run"
KAFKA_VERSION="${KAFKA_VERSION:-4.4.0}"
TIMEOUT="${TEST_SERVICES_TIMEOUT:-120}"
STOP_TIMEOUT=30
PIDFILE="$RUN/kafka.pid"

die() {
  echo "kafka-ctl: $*" >&2
  exit 1
}

log() { echo "kafka-ctl: $*" >&2; }

# Same test as test-services.sh: alive and its command line names our run dir.
is_ours() {
  local pid="$1"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$RUN/"
}

current_pid() { cat "$PIDFILE" 2>/dev/null || true; }

wait_gone() {
  local pid="$1" limit="$2" waited=0
  while is_ours "$pid" && ((waited < limit)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  ! is_ours "$pid"
}

# Args: TERM or KILL.
cmd_stop() {
  local signal="$1" pid
  pid="$(current_pid)"
  if ! is_ours "$pid"; then
    log "kafka is not running"
    return 0
  fi
  log "stopping kafka (pid $pid, $signal)"
  kill "-$signal" "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" $((STOP_TIMEOUT * 10)); then
    log "kafka (pid $pid) ignored $signal for ${STOP_TIMEOUT}s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 50 || die "kafka (pid $pid) survived KILL"
  fi
  # Keep the pid file out of the way, but leave the run dir (storage, config) for 'start'.
  rm -f "$PIDFILE"
}

cmd_start() {
  local pid lib="$CACHE/kafka-$KAFKA_VERSION/lib" port
  [[ -f "$RUN/kafka.properties" ]] || die "no broker configuration in $RUN: run 'scripts/test-services.sh up' first"
  [[ -f "$CACHE/env" ]] || die "services are not up: run 'scripts/test-services.sh up' first"
  [[ -d "$lib" ]] || die "no Kafka $KAFKA_VERSION jars in $lib (set KAFKA_VERSION to the version 'up' used)"
  pid="$(current_pid)"
  if is_ours "$pid"; then
    log "kafka is already running (pid $pid)"
    return 0
  fi
  port="$(sed -n 's/^advertised.listeners=PLAINTEXT:\/\/[^:]*:\([0-9]*\)$/\1/p' "$RUN/kafka.properties")"
  [[ -n "$port" ]] || die "cannot read the broker port from $RUN/kafka.properties"
  # The exact command of test-services.sh's start_kafka, minus the storage format (already done).
  echo "---- kafka-ctl: restart $(date -u +%FT%TZ) ----" >>"$RUN/kafka.log"
  setsid java -Xms128m -Xmx512m -XX:+UseG1GC -Djava.awt.headless=true \
    "-Dlog4j2.configurationFile=$RUN/kafka-log4j2.properties" \
    "-Dlog4j.configuration=file:$RUN/kafka-log4j.properties" -cp "$lib/*" \
    kafka.Kafka "$RUN/kafka.properties" </dev/null >>"$RUN/kafka.log" 2>&1 &
  pid=$!
  echo "$pid" >"$PIDFILE"
  log "started kafka (pid $pid) on 127.0.0.1:$port; waiting until it answers (up to ${TIMEOUT}s)"
  if ! KAFKA_BROKERS="127.0.0.1:$port" KAFKA_PID="$pid" KAFKA_LOG="$RUN/kafka.log" S3_ENDPOINT="" \
    WAIT_TIMEOUT_SECONDS="$TIMEOUT" node "$ROOT/scripts/wait-services.mjs"; then
    die "kafka did not become ready after the restart (log: $RUN/kafka.log)"
  fi
}

cmd_status() {
  local pid
  pid="$(current_pid)"
  if is_ours "$pid"; then
    echo "kafka: running (pid $pid)"
  else
    echo "kafka: stopped"
    return 1
  fi
}

case "${1:-}" in
  stop) cmd_stop TERM ;;
  kill) cmd_stop KILL ;;
  start) cmd_start ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 stop|kill|start|status" >&2
    exit 2
    ;;
esac
