#!/usr/bin/env bash
# A local Ray cluster for development: `cluster/local.sh start [N_WORKERS]` / `stop`.
# Everything binds to 127.0.0.1: the dashboard and job API are not reachable from
# other machines (reach a remote head with `ssh -L 8265:127.0.0.1:8265 head`).
set -euo pipefail
RAY=${RAY:-.venv/bin/ray}
PORT=${RAY_PORT:-6380}
case "${1:-}" in
  start)
    "$RAY" start --head --node-ip-address=127.0.0.1 --port="$PORT" \
      --dashboard-host=127.0.0.1 --dashboard-port=8265 --disable-usage-stats
    for _ in $(seq 1 "${2:-0}"); do
      "$RAY" start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 --disable-usage-stats
    done
    echo "export RAY_ADDRESS=http://127.0.0.1:8265   # for ray job submit"
    ;;
  stop) "$RAY" stop ;;
  *) echo "usage: $0 start [N_WORKERS] | stop" >&2; exit 2 ;;
esac
