#!/bin/bash
# bench/pinned.sh [BUILD] [ROUNDS] [CONNS] -- small requests through llmfd
# and through nginx proxy_pass, each gateway with one worker on a CPU of
# its own (the last one), the load generator and the upstream on the
# others: the gateway's own cost per request, without the scheduler's
# split of two workers and three other processes over shared CPUs that
# swings `make bench`'s 64-connection figure by +-15 % between rounds.
# (The field's gateway benchmark gives gateways dedicated cores too.)
#
# ROUNDS (default 5) interleaved rounds of CONNS (64) connections for 3 s
# after a 1 s warm-up; prints each round's req/s, the gateway's CPU per
# request (its worker's utime + stime over the round) and the median of
# llmfd / nginx. Needs 2 CPUs and taskset.
set -u
BUILD=$(cd "${1:-build}" && pwd)
ROUNDS=${2:-5}
C=${3:-64}
NCPU=$(nproc)
T=$(mktemp -d /tmp/llmfd-pin.XXXXXX)
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$(dirname "$0")/lib.sh"

die() {
	echo "pinned: $*" >&2
	exit 1
}
[ "$NCPU" -ge 2 ] || die "needs 2 CPUs (this machine has $NCPU)"
command -v taskset >/dev/null || die "needs taskset (util-linux)"
GW=$((NCPU - 1))            # the gateways' CPU
REST=0-$((NCPU - 2))        # everything else

UP=$(free_port)
PX=$(free_port)
LT=$(free_port)
ANSWER='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":7,"total_tokens":17}}'
user=""
[ "$(id -u)" = 0 ] && user="user $(id -un) $(id -gn);"

# $1 name, $2 server block: a one-worker nginx.
nginx_conf() {
	mkdir -p "$T/$1"
	cat >"$T/$1/nginx.conf" <<EOF
$user
daemon off; worker_processes 1; pid $T/$1/nginx.pid;
error_log $T/$1/error.log warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $T/$1/body;
	proxy_temp_path $T/$1/proxy; fastcgi_temp_path $T/$1/fastcgi;
	uwsgi_temp_path $T/$1/uwsgi; scgi_temp_path $T/$1/scgi;
	keepalive_requests 10000000; keepalive_timeout 300s;
$2 }
EOF
}
nginx_conf up "server { listen 127.0.0.1:$UP;
	location /v1/chat/completions { default_type application/json;
		return 200 '$ANSWER'; } }"
nginx_conf px "upstream up { server 127.0.0.1:$UP; keepalive 64; }
	server { listen 127.0.0.1:$PX; location / { proxy_pass http://up;
		proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
taskset -c "$REST" nginx -e "$T/up/error.log" -c "$T/up/nginx.conf" \
	-p "$T/up" &
PIDS+=($!)
taskset -c "$GW" nginx -e "$T/px/error.log" -c "$T/px/nginx.conf" \
	-p "$T/px" &
PXPID=$!
PIDS+=($PXPID)
cat >"$T/llmfd.conf" <<EOF
daemon = { workers = 1; listen = "llmfd.sock"; health_table = "health";
	log_level = "warn"; tcp = "127.0.0.1:$LT"; access_log = "off"; };
router = { num_retries = 2; timeout_ms = 120000; };
deployments = ( { name = "live"; group = "main"; provider = "openai";
	model = "m"; base_url = "http://127.0.0.1:$UP/v1"; } );
EOF
(cd "$T" && exec taskset -c "$GW" "$BUILD/llmfd" -c "$T/llmfd.conf" \
	2>"$T/llmfd.log") &
LPID=$!
PIDS+=($LPID)
for p in "$UP" "$PX" "$LT"; do
	wait_up "$p" || die "nothing listening on $p"
done
sleep 0.3

# utime + stime (clock ticks) of the children of $1 (the workers).
ticks() {
	local s=0 p
	for p in $(pgrep -P "$1"); do
		s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat")))
	done
	echo "$s"
}

HZ=$(getconf CLK_TCK)
# One round on port $2 of gateway $1 (master PID $3): "req/s us/req".
one() {
	local a b out
	a=$(ticks "$3")
	out=$(taskset -c "$REST" "$BUILD/llmf-bench" --tcp "127.0.0.1:$2" \
		-c "$C" -d 3 --warmup 1 --model main --json) || return 1
	b=$(ticks "$3")
	python3 -c '
import json, sys
d = json.loads(sys.argv[1]); ticks = int(sys.argv[2]); hz = int(sys.argv[3])
# the ticks cover the warm-up too: scale by the requests of both
n = d["ok"] * (4.0 / 3.0)
print("%d %.1f" % (d["rps"], ticks / hz * 1e6 / n))' "$out" "$((b - a))" "$HZ"
}

echo "pinned: gateways on CPU $GW, llmf-bench and the upstream on $REST;" \
	"$C connections, $ROUNDS rounds"
R=()
for r in $(seq "$ROUNDS"); do
	read -r nr nc < <(one nginx "$PX" "$PXPID") || die "nginx round failed"
	read -r lr lc < <(one llmfd "$LT" "$LPID") || die "llmfd round failed"
	R+=("$(python3 -c "print('%.3f' % ($lr / $nr))")")
	printf 'round %d: nginx %6d req/s (%5.1f us CPU/req)  llmfd %6d req/s' \
		"$r" "$nr" "$nc" "$lr"
	printf ' (%5.1f us CPU/req)  llmfd/nginx %s\n' "$lc" "${R[-1]}"
done
printf '%s\n' "${R[@]}" | sort -n | awk '{v[NR] = $1}
	END {printf "median llmfd/nginx: %s (min %s, max %s)\n",
	     v[int((NR + 1) / 2)], v[1], v[NR]}'
