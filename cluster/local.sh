#!/usr/bin/env bash
# A local Ray cluster for development: `cluster/local.sh start [N_WORKERS]` / `stop`.
# Every node binds to 127.0.0.1 and token authentication is on, so the dashboard and job
# API are reachable only from this machine, and only with the token (Ray generates it on
# first start at ~/.ray/auth_token; `ray job submit` run here picks it up).
# Reach a remote head the same way: `ssh -L 8265:127.0.0.1:8265 head`.
# WORKER_CPUS / WORKER_GPUS / OBJECT_STORE_BYTES size each extra worker node.
set -euo pipefail
RAY=${RAY:-.venv/bin/ray}
PORT=${RAY_PORT:-6380}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
# Jobs' `python` is the one on the raylets' PATH: the venv's.
PATH="$(cd "$(dirname "$RAY")" && pwd):$PATH"
export PATH
worker_args=()
[[ -n "${WORKER_CPUS:-}" ]] && worker_args+=(--num-cpus="$WORKER_CPUS")
[[ -n "${WORKER_GPUS:-}" ]] && worker_args+=(--num-gpus="$WORKER_GPUS")
[[ -n "${OBJECT_STORE_BYTES:-}" ]] && worker_args+=(--object-store-memory="$OBJECT_STORE_BYTES")
case "${1:-}" in
  start)
    [[ "$RAY_AUTH_MODE" == token ]] && "$RAY" get-auth-token --generate >/dev/null
    "$RAY" start --head --node-ip-address=127.0.0.1 --port="$PORT" \
      --dashboard-host=127.0.0.1 --dashboard-port=8265 --disable-usage-stats
    for _ in $(seq 1 "${2:-0}"); do
      "$RAY" start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 \
        --disable-usage-stats "${worker_args[@]}"
    done
    echo "export RAY_ADDRESS=http://127.0.0.1:8265 RAY_AUTH_MODE=$RAY_AUTH_MODE   # for ray job submit"
    ;;
  stop) "$RAY" stop ;;
  *) echo "usage: $0 start [N_WORKERS] | stop" >&2; exit 2 ;;
esac
