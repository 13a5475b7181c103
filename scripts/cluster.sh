#!/usr/bin/env bash
# A Spark standalone cluster on this machine: one master and N workers, started from the PySpark
# installed in the project's virtual environment (no separate Spark download needed).
#
#   scripts/cluster.sh start    # starts the daemons, waits for the workers, prints the master URL
#   scripts/cluster.sh status   # the master URL and the workers alive, or exit status 1
#   scripts/cluster.sh stop     # stops the daemons this script started
#
# Then submit jobs to it, e.g.
#   make package
#   spark-submit --master spark://127.0.0.1:7077 --py-files dist/ser_spark.zip \
#       jobs/extract_features.py --input DATA --output OUT
#
# Settings (environment variables, defaults in brackets):
#   CLUSTER_DIR [.cluster]            pid files, daemon logs, worker folders
#   CLUSTER_HOST [$SPARK_LOCAL_IP or 127.0.0.1]
#   CLUSTER_PORT [7077]  CLUSTER_WEBUI_PORT [8080]
#   CLUSTER_WORKER_WEBUI_PORT [8081, then +1 per worker; 0: any free port]
#   CLUSTER_WORKERS [2]  CLUSTER_WORKER_CORES [1]   CLUSTER_WORKER_MEMORY [1g]
#   PYTHON [.venv/bin/python]         the interpreter whose PySpark provides spark-class
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
DIR=${CLUSTER_DIR:-.cluster}
HOST=${CLUSTER_HOST:-${SPARK_LOCAL_IP:-127.0.0.1}}
PORT=${CLUSTER_PORT:-7077}
WEBUI_PORT=${CLUSTER_WEBUI_PORT:-8080}
WORKER_WEBUI_PORT=${CLUSTER_WORKER_WEBUI_PORT:-8081}
WORKERS=${CLUSTER_WORKERS:-2}
CORES=${CLUSTER_WORKER_CORES:-1}
MEMORY=${CLUSTER_WORKER_MEMORY:-1g}
URL="spark://$HOST:$PORT"
export SPARK_LOCAL_IP=$HOST

alive_workers() {
  # Number of workers the master reports ALIVE (its web UI's JSON), or nothing when it is down.
  "$PYTHON" - "http://$HOST:$WEBUI_PORT/json/" <<'PY' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as response:
    print(json.load(response)["aliveworkers"])
PY
}

running_pids() {
  # The pids in $DIR that still belong to a Spark daemon (a pid file may outlive its process).
  local file
  for file in "$DIR"/*.pid; do
    [[ -e $file ]] || continue
    if ps -p "$(cat "$file")" -o args= 2>/dev/null | grep -q org.apache.spark.deploy; then cat "$file"; fi
  done
}

start() {
  if [[ -n $(running_pids) ]]; then
    echo "a cluster started from $DIR is already running; run $0 stop first" >&2
    exit 1
  fi
  local spark_home
  spark_home=$("$PYTHON" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')
  export SPARK_HOME=$spark_home
  mkdir -p "$DIR"
  nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.master.Master \
    --host "$HOST" --port "$PORT" --webui-port "$WEBUI_PORT" >"$DIR/master.log" 2>&1 &
  echo $! >"$DIR/master.pid"
  for _ in $(seq 120); do
    [[ -n $(alive_workers) ]] && break
    sleep 0.5
  done
  [[ -n $(alive_workers) ]] || { echo "the master did not start; see $DIR/master.log" >&2; stop; exit 1; }
  for i in $(seq "$WORKERS"); do
    mkdir -p "$DIR/worker-$i"
    nohup "$SPARK_HOME/bin/spark-class" org.apache.spark.deploy.worker.Worker \
      --host "$HOST" --cores "$CORES" --memory "$MEMORY" \
      --webui-port $((WORKER_WEBUI_PORT == 0 ? 0 : WORKER_WEBUI_PORT + i - 1)) \
      --work-dir "$DIR/worker-$i" "$URL" >"$DIR/worker-$i.log" 2>&1 &
    echo $! >"$DIR/worker-$i.pid"
  done
  for _ in $(seq 120); do
    [[ $(alive_workers) -ge $WORKERS ]] 2>/dev/null && { echo "$URL"; return 0; }
    sleep 0.5
  done
  echo "the workers did not register with $URL; see $DIR/worker-*.log" >&2
  stop
  exit 1
}

stop() {
  local pids
  pids=$(running_pids)
  if [[ -n $pids ]]; then
    # shellcheck disable=SC2086 # one pid per word
    kill $pids 2>/dev/null || true
    for _ in $(seq 40); do
      [[ -z $(running_pids) ]] && break
      sleep 0.25
    done
    pids=$(running_pids)
    # shellcheck disable=SC2086
    [[ -z $pids ]] || kill -9 $pids 2>/dev/null || true
  fi
  rm -f "$DIR"/*.pid
}

status() {
  local workers
  workers=$(alive_workers)
  if [[ -z $workers ]]; then
    echo "no master answers at http://$HOST:$WEBUI_PORT" >&2
    exit 1
  fi
  echo "$URL ($workers workers alive)"
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|status|stop" >&2; exit 2 ;;
esac
