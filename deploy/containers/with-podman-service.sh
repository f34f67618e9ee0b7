#!/usr/bin/env bash
# Run a command with podman's Docker-compatible API on a socket of its own (testcontainers talks to it):
# `podman system service` is started for the command only and stopped by its pid afterwards, whatever
# the command's outcome. Ryuk (testcontainers' reaper, an image from Docker Hub) is disabled: the
# fixtures stop their containers themselves (tests/conftest.py).
set -euo pipefail
dir=$(mktemp -d /tmp/labflow-podman-XXXXXX)
socket="$dir/podman.sock"
podman system service --time=0 "unix://$socket" >"$dir/service.log" 2>&1 &
service=$!
stop() { kill "$service" 2>/dev/null && wait "$service" 2>/dev/null; rm -rf "$dir"; }
trap stop EXIT
for _ in $(seq 1 300); do
  [ -S "$socket" ] && curl -fsS --unix-socket "$socket" http://d/_ping >/dev/null 2>&1 && break
  kill -0 "$service" 2>/dev/null || { cat "$dir/service.log" >&2; exit 1; }
  sleep 0.1
done
export DOCKER_HOST="unix://$socket" TESTCONTAINERS_RYUK_DISABLED=true LABFLOW_TEST_CONTAINERS=1
"$@"
