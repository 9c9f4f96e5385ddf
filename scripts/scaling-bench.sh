#!/usr/bin/env bash
# Measures how session events spread over the nodes of a cluster (see
# docs/scaling.md): for each run it starts a Redis Cluster of 3 masters with
# one replica each and 4 sessionbridge nodes, all on free loopback ports, runs
# `sessionbridge-bench --scenarios scaling` against them, and stops
# everything it started. After the runs it prints the median, minimum and
# maximum of every figure over the runs.
#
# Environment (all optional):
#   RUNS            runs, each on a fresh cluster (default 3)
#   SOCKETS         sockets spread over the nodes, one session each (default 8000)
#   UPDATES MESSAGES TOUCHES REVOKES   events of each kind (default 2000 2000 2000 500)
#   NODES           sessionbridge nodes (default 4)
#   MASTERS         Redis masters, each with one replica (default 3)
#   TOUCH_INTERVAL  the nodes' --touch-interval, so that touches can be
#                   produced without waiting the default minute (default 2s)
#   LOG_LEVEL       the nodes' --log-level (default warn: info writes an audit
#                   record per connect and disconnect)
#   OUT             where reports and logs go (default: a new temp directory)
#   EXTRA_BENCH_ARGS  more sessionbridge-bench flags, word-split
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS="${RUNS:-3}"
SOCKETS="${SOCKETS:-8000}"
UPDATES="${UPDATES:-2000}"
MESSAGES="${MESSAGES:-2000}"
TOUCHES="${TOUCHES:-2000}"
REVOKES="${REVOKES:-500}"
NODES="${NODES:-4}"
MASTERS="${MASTERS:-3}"
TOUCH_INTERVAL="${TOUCH_INTERVAL:-2s}"
LOG_LEVEL="${LOG_LEVEL:-warn}"
EXTRA_BENCH_ARGS="${EXTRA_BENCH_ARGS:-}"
OUT="${OUT:-$(mktemp -d -t sb-scaling-XXXXXX)}"
mkdir -p "$OUT"
WORK="$(mktemp -d -t sb-scaling-work-XXXXXX)"
REDIS_COUNT=$((MASTERS * 2))

for c in redis-server redis-cli ss curl go; do
	command -v "$c" >/dev/null 2>&1 || { echo "scaling-bench: $c not found" >&2; exit 1; }
done

# Every process this script started, by PID; only these are ever stopped.
PIDS=()
stop_pid() { # stop_pid PID: TERM, then KILL after 15 s
	local pid="$1" i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for i in $(seq 1 150); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	echo "scaling-bench: $pid did not stop in 15 s, sending KILL" >&2
	kill -KILL "$pid" 2>/dev/null || true
}
stop_all() {
	local i
	# Nodes first (started last), then Redis.
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${PIDS[$i]}"
	done
	PIDS=()
}
cleanup() {
	set +e
	stop_all
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free: no socket at all (listening or connected) uses it as local port.
port_free() { ! ss -tanH "( sport = :$1 )" | grep -q .; }

# free_ports N STEP: N free loopback ports; for Redis Cluster each port's
# bus port (port + 10000) must be free too.
free_ports() {
	local want="$1" bus="$2" p out=()
	# Below the usual ephemeral range (32768 and up), bus ports included.
	p=$((10000 + RANDOM % 8000))
	while [ "${#out[@]}" -lt "$want" ]; do
		if port_free "$p" && { [ "$bus" = 0 ] || port_free $((p + 10000)); }; then
			out+=("$p")
		fi
		p=$((p + 1))
	done
	echo "${out[@]}"
}

wait_until() { # wait_until SECONDS WHAT COMMAND...
	local secs="$1" what="$2" i
	shift 2
	for i in $(seq 1 $((secs * 10))); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "scaling-bench: timed out after ${secs}s waiting for $what" >&2
	return 1
}

cluster_ok() { # every server says cluster_state:ok and every replica is in sync
	local p
	for p in "${REDIS_PORTS[@]}"; do
		redis-cli -h 127.0.0.1 -p "$p" cluster info | grep -q '^cluster_state:ok' || return 1
		if redis-cli -h 127.0.0.1 -p "$p" info replication | grep -q '^role:slave'; then
			redis-cli -h 127.0.0.1 -p "$p" info replication | grep -q '^master_link_status:up' || return 1
		fi
	done
}

start_cluster() { # start_cluster RUN
	local run="$1" p dir addrs=()
	read -r -a REDIS_PORTS <<<"$(free_ports "$REDIS_COUNT" 1)"
	for p in "${REDIS_PORTS[@]}"; do
		dir="$WORK/redis-$run-$p"
		mkdir -p "$dir"
		redis-server --port "$p" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly no \
			--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
			--repl-diskless-sync-delay 0 --logfile "$OUT/run$run-redis-$p.log" &
		PIDS+=("$!")
		addrs+=("127.0.0.1:$p")
	done
	for p in "${REDIS_PORTS[@]}"; do
		wait_until 10 "redis on port $p" redis-cli -h 127.0.0.1 -p "$p" ping
	done
	redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$OUT/run$run-cluster-create.log" 2>&1
	wait_until 60 "the Redis Cluster to be healthy" cluster_ok
	REDIS_ADDRS="$(IFS=,; echo "${addrs[*]}")"
	REDIS_URL="redis://${addrs[0]}"
	local sep="?"
	for a in "${addrs[@]:1}"; do
		REDIS_URL+="${sep}addr=$a"
		sep="&"
	done
}

start_nodes() { # start_nodes RUN
	local run="$1" k port urls=()
	read -r -a NODE_PORTS <<<"$(free_ports "$NODES" 0)"
	for k in $(seq 1 "$NODES"); do
		port="${NODE_PORTS[$((k - 1))]}"
		# The admin token travels in the environment only, never on a command line.
		SESSIONBRIDGE_ADMIN_TOKEN="$ADMIN_TOKEN" "$WORK/sessionbridge" serve \
			--addr "127.0.0.1:$port" --redis-url "$REDIS_URL" --node-id "node$k" \
			--users "$WORK/no-users.json" --log-level "$LOG_LEVEL" --touch-interval "$TOUCH_INTERVAL" \
			>>"$OUT/run$run-node$k.log" 2>&1 &
		PIDS+=("$!")
		urls+=("http://127.0.0.1:$port")
	done
	for u in "${urls[@]}"; do
		wait_until 30 "$u/readyz" curl -fsS -o /dev/null --max-time 1 "$u/readyz"
	done
	NODE_URLS="$(IFS=,; echo "${urls[*]}")"
}

ADMIN_TOKEN="$(head -c 32 /dev/urandom | base64 | tr -d '\n=+/')"
export SESSIONBRIDGE_ADMIN_TOKEN="$ADMIN_TOKEN"

go build -o "$WORK/sessionbridge" ./cmd/sessionbridge
go build -o "$WORK/sessionbridge-bench" ./cmd/sessionbridge-bench

{
	echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "commit: $(git describe --always --dirty 2>/dev/null || echo unknown)"
	echo "uname: $(uname -srm)"
	echo "cpus: $(nproc)"
	grep -m1 'model name' /proc/cpuinfo || true
	echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "open files limit: $(ulimit -n)"
	echo "go: $(go version)"
	redis-server --version
	echo "RUNS=$RUNS SOCKETS=$SOCKETS UPDATES=$UPDATES MESSAGES=$MESSAGES TOUCHES=$TOUCHES REVOKES=$REVOKES NODES=$NODES MASTERS=$MASTERS TOUCH_INTERVAL=$TOUCH_INTERVAL LOG_LEVEL=$LOG_LEVEL EXTRA_BENCH_ARGS=$EXTRA_BENCH_ARGS"
} | tee "$OUT/env.txt"

for run in $(seq 1 "$RUNS"); do
	echo "== run $run of $RUNS"
	start_cluster "$run"
	start_nodes "$run"
	# shellcheck disable=SC2086 # EXTRA_BENCH_ARGS is meant to be split
	"$WORK/sessionbridge-bench" --nodes "$NODE_URLS" --scenarios scaling \
		--redis-nodes "$REDIS_ADDRS" --scaling-sockets "$SOCKETS" \
		--scaling-updates "$UPDATES" --scaling-messages "$MESSAGES" \
		--scaling-touches "$TOUCHES" --scaling-revokes "$REVOKES" \
		--scaling-touch-interval "$TOUCH_INTERVAL" --json "$OUT/run$run.json" $EXTRA_BENCH_ARGS \
		2>"$OUT/run$run.stderr" | tee "$OUT/run$run.txt"
	stop_all
	echo "load average after run $run: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/env.txt"
done

runs=()
for run in $(seq 1 "$RUNS"); do runs+=("$OUT/run$run.json"); done
"$WORK/sessionbridge-bench" summarize "${runs[@]}" | tee "$OUT/summary.md"
echo "reports, logs and summary in $OUT"
