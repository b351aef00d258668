#!/usr/bin/env bash
# bench/callgrind.sh BUILD_DIR [SCENARIO...] -- instructions per request of
# an llmfd worker, counted by callgrind (repeatable on a shared, noisy host,
# unlike wall-clock numbers). One worker runs under valgrind in front of an
# nginx upstream answering a fixed chat.completion (or llmf-mock streams);
# callgrind counts inside the worker's event loop, and the difference
# between runs of 50 + N and 50 + 2N requests is the cost of N requests.
#
# Scenarios: small (a 60-byte chat request), big (100 KB), stream (20 frames
# through llmf-mock), circ (small, to a group whose first deployment is
# dead: its circuit opens in the warm-up, then every request skips it).
# Default: small big stream. Environment: CG_N requests per scenario
# (default 200), CG_TOP functions shown (default 25), CG_KEEP=1 keeps the
# temp dir and the callgrind files.
set -euo pipefail

BUILD=$(cd "${1:-build}" && pwd)
shift || true
SCEN=("$@")
[ ${#SCEN[@]} -gt 0 ] || SCEN=(small big stream)
N=${CG_N:-200}
TOP=${CG_TOP:-25}
T=$(mktemp -d /tmp/llmfd-cg.XXXXXX)
PIDS=()

cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ "${CG_KEEP:-0}" = 1 ] && echo "callgrind: kept $T" >&2 || rm -rf "$T"
}
trap cleanup EXIT

. "$(dirname "$0")/lib.sh"

die_up() {
	echo "callgrind: nothing listening on $1" >&2
	exit 1
}

UP=$(free_port)
MS=$(free_port)
ANSWER='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":7,"total_tokens":17}}'
user=""
[ "$(id -u)" = 0 ] && user="user $(id -un) $(id -gn);"
mkdir -p "$T/up"
cat >"$T/up/nginx.conf" <<EOF
$user
daemon off; worker_processes 1; pid $T/up/nginx.pid;
error_log $T/up/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $T/up/body;
	keepalive_requests 10000000; client_max_body_size 8m;
	client_body_buffer_size 256k;
	server { listen 127.0.0.1:$UP;
		location /v1/chat/completions { default_type application/json;
			return 200 '$ANSWER'; } } }
EOF
nginx -e "$T/up/error.log" -c "$T/up/nginx.conf" -p "$T/up" &
PIDS+=($!)
"$BUILD/llmf-mock" --port "$MS" --name slow --chunks 20 \
	--chunk-delay-ms 0 2>"$T/mock.log" &
PIDS+=($!)
cat >"$T/llmfd.conf" <<EOF
daemon = { workers = 1; listen = "llmfd.sock"; health_table = "health";
	log_level = "warn"; access_log = "off"; };
router = { num_retries = 0; timeout_ms = 600000;
	circuit_failure_threshold = 2; circuit_recovery_s = 3600;
	circuit_max_s = 3600; allowed_fails = 1000000;
	attempt_timeout_ms = 600000; first_token_timeout_ms = 600000; };
deployments = (
	{ name = "live"; group = "main"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$UP/v1"; },
	{ name = "slow"; group = "slow"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$MS/v1"; },
	{ name = "claude"; group = "claude"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$UP/v1"; },
	{ name = "dead"; group = "circ"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:1/v1"; },
	{ name = "live2"; group = "circ"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$UP/v1"; }
);
EOF
cd "$T"

# Start llmfd (one worker, under callgrind, counting inside the event loop
# only); sets LPID and W.
start_llmfd() {
	rm -f "$T/llmfd.sock"
	valgrind --tool=callgrind --collect-atstart=no \
		--toggle-collect=event_base_loop --trace-children=no \
		--callgrind-out-file="$T/cg.%p" "$BUILD/llmfd" -c "$T/llmfd.conf" \
		2>"$T/llmfd.log" &
	LPID=$!
	wait_up "$T/llmfd.sock" 400 || die_up "$T/llmfd.sock"
	sleep 0.5
	W=$(pgrep -P "$LPID" | head -1)
	[ -n "$W" ] || { cat "$T/llmfd.log" >&2; exit 1; }
}

# Stop it; the worker's instruction count.
stop_llmfd() {
	kill "$LPID"
	wait "$LPID" 2>/dev/null || true
	while kill -0 "$W" 2>/dev/null; do sleep 0.1; done
	sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$T/cg.$W"
}

wait_up "$UP" 400 || die_up "$UP"
wait_up "$MS" 400 || die_up "$MS"

# One scenario: $1 name, then llmf-bench arguments. Two runs, of 50 + N
# and 50 + 2N requests: the difference is the cost of N requests, warm-up
# and timers aside.
scenario() {
	local name=$1 a b
	shift
	start_llmfd
	"$BUILD/llmf-bench" --unix "$T/llmfd.sock" -n $((50 + N)) "$@" \
		>"$T/$name.a.out"
	a=$(stop_llmfd)
	start_llmfd
	"$BUILD/llmf-bench" --unix "$T/llmfd.sock" -n $((50 + 2 * N)) "$@" \
		>"$T/$name.b.out"
	b=$(stop_llmfd)
	printf '%s: %s Ir/request (%s - %s over %d requests; %s)\n' "$name" \
		"$(((b - a) / N))" "$b" "$a" "$N" \
		"$(grep -o 'errors:.*' "$T/$name.b.out")"
	callgrind_annotate --inclusive=no "$T/cg.$W" 2>/dev/null |
		grep -E '^ *[0-9,]+ ' | head -"$TOP" |
		awk -v n=$((50 + 2 * N)) '{ v = $1; gsub(",", "", v);
			$1 = ""; printf "    %10d /req %s\n", v / n, $0 }' || true
}

for s in "${SCEN[@]}"; do
	case $s in
	small) scenario small -c 1 ;;
	big) scenario big -c 1 --body-size 102400 ;;
	stream) scenario stream -c 1 --stream --model slow ;;
	circ) scenario circ -c 1 --model circ ;;
	*) echo "callgrind: unknown scenario $s" >&2 ;;
	esac
done
