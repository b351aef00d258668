#!/usr/bin/env bash
# bench/run.sh BUILD_DIR -- the llmfd benchmark (run by `make bench`).
#
# Measures, side by side in one run and as the field measures gateways:
# llmfd, nginx as a plain proxy_pass, the upstream direct and (when `make
# bench` could install it) Portkey's gateway. On loopback in a temp dir it
# starts nginx as a fixed-answer upstream, nginx as a keep-alive reverse
# proxy in front of it (and of the stream mock), llmf-mock instances (64
# frames 20 ms apart; 20 frames 500 ms apart; 20 % 503s), llmfd (2
# workers, Unix socket + TCP) and Portkey, drives them with llmf-bench,
# samples llmfd's RSS, and writes bench/RESULTS.md with bench/report.py:
#   - small requests at 1 connection: added p50 / p99 over direct;
#   - the throughput frontier: most req/s with p99 <= 1 ms, <= 5 ms and
#     unbounded, no failures, over a concurrency ladder;
#   - 100 KB prompts at 1 and 16 connections;
#   - streams of 64 frames 20 ms apart: added TTFT and inter-frame gap, one
#     target after another and all of them side by side (which decides),
#     and the most concurrent streams with no frame lost and no gap >
#     200 ms;
#   - llmfd's RSS idle, under a fixed load, at NSTREAMS slow streams and
#     RECOVER seconds after them; the open-circuit path against the healthy
#     one (pairs one after the other) and the 20 % 503 path.
# Every process is stopped by PID on exit.
#
# Environment: BENCH_SECS (3) per measurement, BENCH_ROUNDS (5) interleaved
# rounds, BENCH_STREAM_ROUNDS (2 x BENCH_ROUNDS) of streams and
# BENCH_BIG_ROUNDS (2 x BENCH_ROUNDS) of 100 KB prompts, BENCH_LADDER
# ("1 2 4 8 12 16 24 32 64 128") and BENCH_LADDER_SECS (2),
# BENCH_RECONNECT_MS (250; 0 keeps them) the ladder's connection lifetime,
# BENCH_STREAM_LADDER ("250 500 1000 2000 5000 10000"), BENCH_STREAMS
# (10000) slow streams, BENCH_RECOVER (60) seconds, BENCH_RATE (2000) req/s
# of the fixed load, BENCH_PROFILE (1 when `perf` samples here), BENCH_KEEP=1
# to keep the temp dir, BENCH_OUT (bench/RESULTS.md).
set -euo pipefail

BUILD=$(cd "${1:-build}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${BENCH_SECS:-3}
ROUNDS=${BENCH_ROUNDS:-5}
SROUNDS=${BENCH_STREAM_ROUNDS:-$((2 * ROUNDS))}
BROUNDS=${BENCH_BIG_ROUNDS:-$((2 * ROUNDS))}
WARM=1
LADDER=${BENCH_LADDER:-"1 2 4 8 12 16 24 32 64 128"}
LSECS=${BENCH_LADDER_SECS:-2}
RECONN=${BENCH_RECONNECT_MS:-250}
SLADDER=${BENCH_STREAM_LADDER:-"250 500 1000 2000 5000 10000"}
NSTREAMS=${BENCH_STREAMS:-10000}
RECOVER=${BENCH_RECOVER:-60}
RATE=${BENCH_RATE:-2000}
OUT=${BENCH_OUT:-$ROOT/bench/RESULTS.md}
PKJS=$ROOT/bench/portkey/node_modules/@portkey-ai/gateway/build/start-server.js
T=$(mktemp -d /tmp/llmfd-bench.XXXXXX)
PIDS=()
SAMPLER=""

# Stop everything we started, by PID, then remove the temp dir.
cleanup() {
	[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null || true
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	[ "${BENCH_KEEP:-0}" = 1 ] && echo "bench: kept $T" >&2 || rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "bench: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }
meta() { echo "$1=$2" >>"$T/meta"; }

for b in llmfd llmfctl llmf-mock llmf-bench; do
	[ -x "$BUILD/$b" ] || die "$BUILD/$b is missing (make all)"
done
command -v nginx >/dev/null || die "nginx is missing (make deps)"
command -v python3 >/dev/null || die "python3 is missing"
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((NSTREAMS + 100)) ] ||
	log "warning: RLIMIT_NOFILE $(ulimit -n) is low for $NSTREAMS streams"

. "$(dirname "$0")/lib.sh"

UP=$(free_port)
PX=$(free_port)
PXS=$(free_port)
LT=$(free_port)
MF=$(free_port)
MS=$(free_port)
ML=$(free_port)
PK=$(free_port)
RL=$(free_port)

ANSWER='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the bench upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":7,"total_tokens":17}}'

# The nginx config shared by both roles: $1 name, $2 workers, $3 server block.
nginx_conf() {
	local user=""
	[ "$(id -u)" = 0 ] && user="user $(id -un) $(id -gn);"
	mkdir -p "$T/$1"
	cat >"$T/$1/nginx.conf" <<EOF
$user
daemon off;
worker_processes $2;
pid $T/$1/nginx.pid;
error_log $T/$1/error.log warn;
events { worker_connections 30000; }
worker_rlimit_nofile $(ulimit -n);
http {
	access_log off;
	client_body_temp_path $T/$1/body;
	proxy_temp_path $T/$1/proxy;
	fastcgi_temp_path $T/$1/fastcgi;
	uwsgi_temp_path $T/$1/uwsgi;
	scgi_temp_path $T/$1/scgi;
	keepalive_requests 10000000;
	keepalive_timeout 300s;
	client_max_body_size 8m;
	client_body_buffer_size 256k;
$3
}
EOF
}

# (a) upstream: one nginx worker answering a fixed chat.completion.
nginx_conf up 1 "	server {
		listen 127.0.0.1:$UP;
		location /v1/chat/completions {
			default_type application/json;
			return 200 '$ANSWER';
		}
	}"
# (b) a plain keep-alive reverse proxy with as many workers as llmfd, in
# front of the upstream and (unbuffered, for streams) of the stream mock.
nginx_conf px 2 "	upstream up { server 127.0.0.1:$UP; keepalive 64; }
	upstream st { server 127.0.0.1:$MS; keepalive 64; }
	server {
		listen 127.0.0.1:$PX;
		location / {
			proxy_pass http://up;
			proxy_http_version 1.1;
			proxy_set_header Connection \"\";
		}
	}
	server {
		listen 127.0.0.1:$PXS;
		location / {
			proxy_pass http://st;
			proxy_http_version 1.1;
			proxy_set_header Connection \"\";
			proxy_buffering off;
			proxy_read_timeout 300s;
		}
	}"

nginx -e "$T/up/error.log" -c "$T/up/nginx.conf" -p "$T/up" &
PIDS+=($!)
nginx -e "$T/px/error.log" -c "$T/px/nginx.conf" -p "$T/px" &
PIDS+=($!)
"$BUILD/llmf-mock" --port "$MF" --name flaky --mode status --status 503 \
	--fail-percent 20 2>"$T/mock-flaky.log" &
PIDS+=($!)
"$BUILD/llmf-mock" --port "$MS" --name stream --chunks 64 --stamp 1 \
	--chunk-delay-ms 20 2>"$T/mock-stream.log" &
PIDS+=($!)
# for streams: a bare relay (a blocking read and write per chunk, no proxy work)
"$BUILD/llmf-relay" "$RL" "127.0.0.1:$MS" 2>"$T/relay.log" &
PIDS+=($!)
"$BUILD/llmf-mock" --port "$ML" --name slow --chunks 20 \
	--chunk-delay-ms 500 2>"$T/mock-slow.log" &
PIDS+=($!)

# (c) llmfd: main -> the nginx upstream; circ -> a dead port first, then
# the upstream; flaky -> the 20 % mock; stream and slow -> the stream mocks.
cat >"$T/llmfd.conf" <<EOF
daemon = { workers = 2; listen = "llmfd.sock"; health_table = "health";
	log_level = "warn"; tcp = "127.0.0.1:$LT";
	# like the nginx configs: no access log on the measured path
	access_log = "off"; };
router = { num_retries = 2; backoff_base_ms = 10; backoff_max_ms = 50;
	timeout_ms = 120000; attempt_timeout_ms = 60000;
	first_token_timeout_ms = 60000;
	# high enough that the 20 % 503 deployment (every fifth request fails,
	# 64 at once) never trips it; the dead one gets there in warm-up
	circuit_failure_threshold = 20; circuit_recovery_s = 3600;
	circuit_max_s = 3600;
	# Cooldown is kept out of the way: with queue_when_cooling, a cooled
	# single-deployment group makes requests wait out cooldown_s (30 s)
	# instead of trying it anyway.
	allowed_fails = 1000000; };
deployments = (
	{ name = "live"; group = "main"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$UP/v1"; },
	{ name = "dead"; group = "circ"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:1/v1"; },
	{ name = "live2"; group = "circ"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$UP/v1"; },
	{ name = "flaky"; group = "flaky"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$MF/v1"; },
	{ name = "stream"; group = "stream"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$MS/v1"; },
	{ name = "slow"; group = "slow"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$ML/v1"; }
);
EOF
"$BUILD/llmfd" -c "$T/llmfd.conf" 2>"$T/llmfd.log" &
LPID=$!
PIDS+=($LPID)
for p in "$UP" "$PX" "$PXS" "$LT" "$MF" "$MS" "$ML" "$RL" "$T/llmfd.sock"; do
	wait_up "$p" || die "nothing listening on $p"
done
sleep 0.3
kill -0 "$LPID" 2>/dev/null || { cat "$T/llmfd.log" >&2; die "llmfd died"; }

# (d) Portkey's gateway, if `make bench` installed it and it answers.
# bench/portkey pins @hono/node-server to 1.13.8: from 1.14 on, its
# Response hands Portkey a streamed upstream reply's immutable headers,
# and every stream fails with "TypeError: immutable" (Portkey-AI/gateway
# #1389, which names 1.14.2 as the last good one; its streams fail too).
PKNOTE=""
PKH=(-H "x-portkey-provider: openai" -H "Authorization: Bearer bench")
if [ ! -f "$PKJS" ] || ! command -v node >/dev/null; then
	PKNOTE="not installed (make bench installs it with npm); skipped"
else
	node "$PKJS" --port="$PK" --headless >"$T/portkey.log" 2>&1 &
	PIDS+=($!)
	if ! wait_up "$PK" 200; then
		PKNOTE="did not start; skipped"
	elif ! "$BUILD/llmf-bench" --tcp "127.0.0.1:$PK" "${PKH[@]}" \
		-H "x-portkey-custom-host: http://127.0.0.1:$UP/v1" -n 5 \
		>/dev/null 2>&1; then
		PKNOTE="answered no request; skipped"
	fi
fi
[ -n "$PKNOTE" ] && log "Portkey: $PKNOTE"

# ---- measuring ----

# RSS in kB of llmfd: "master+workers workers".
rss_now() {
	local m w=0 p
	m=$(awk '/^VmRSS/ {print $2}' "/proc/$LPID/status" 2>/dev/null || echo 0)
	for p in $(pgrep -P "$LPID"); do
		w=$((w + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" \
			2>/dev/null || echo 0)))
	done
	echo "$((m + w)) $w"
}

# Record the RSS now as rss_$1 / rssw_$1.
rss_meta() {
	local t w
	read -r t w <<<"$(rss_now)"
	meta "rss_$1" "$t"
	meta "rssw_$1" "$w"
}

# The descriptors each worker holds: "n1 n2 ...".
fds_now() {
	local p out=""
	for p in $(pgrep -P "$LPID"); do
		out="$out $(ls "/proc/$p/fd" 2>/dev/null | wc -l)"
	done
	echo $out
}

# Sample RSS (and each worker's descriptors) every 0.2 s until rss_stop.
rss_start() {
	(while :; do echo "$(rss_now) $(fds_now)"; sleep 0.2; done) \
		>"$T/rss.$1" &
	SAMPLER=$!
}

# Stop sampling; record the peak as rss_$2 / rssw_$2, and the workers'
# descriptors then as fds_$2 (how the connections split between them).
rss_stop() {
	kill "$SAMPLER" 2>/dev/null || true
	wait "$SAMPLER" 2>/dev/null || true
	SAMPLER=""
	read -r t w f <<<"$(awk '{ if ($1 > t) { t = $1; w = $2; f = "" ;
		for (i = 3; i <= NF; i++) f = f " " $i } }
		END { print t + 0, w + 0, f }' "$T/rss.$1")"
	meta "rss_$2" "$t"
	meta "rssw_$2" "$w"
	meta "fds_$2" "$f"
}

# One llmf-bench run: $1 label, then llmf-bench arguments; its JSON to
# $T/all.jsonl.
run() {
	local label=$1
	shift
	log "$label: llmf-bench $*"
	"$BUILD/llmf-bench" --label "$label" --json "$@" >"$T/$label.json" ||
		log "$label: no successful request"
	cat "$T/$label.json" >>"$T/all.jsonl"
}

# The llmf-bench target arguments of $1 (into ARGS), small requests.
targs() {
	case $1 in
	direct) ARGS=(--tcp "127.0.0.1:$UP") ;;
	nginx) ARGS=(--tcp "127.0.0.1:$PX") ;;
	llmfd | again) ARGS=(--tcp "127.0.0.1:$LT") ;;
	unix) ARGS=(--unix "$T/llmfd.sock") ;;
	portkey) ARGS=(--tcp "127.0.0.1:$PK" "${PKH[@]}"
		-H "x-portkey-custom-host: http://127.0.0.1:$UP/v1") ;;
	esac
}

# The same for streams (64 frames 20 ms apart).
sargs() {
	case $1 in
	direct) ARGS=(--tcp "127.0.0.1:$MS") ;;
	nginx) ARGS=(--tcp "127.0.0.1:$PXS") ;;
	relay) ARGS=(--tcp "127.0.0.1:$RL") ;;
	llmfd | again) ARGS=(--tcp "127.0.0.1:$LT" --model stream) ;;
	portkey) ARGS=(--tcp "127.0.0.1:$PK" "${PKH[@]}"
		-H "x-portkey-custom-host: http://127.0.0.1:$MS/v1") ;;
	esac
}

# The state of the circuit of deployment $1.
circuit() {
	"$BUILD/llmfctl" -t "$T/health" status --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(next((x.get("circuit", "") for x in d.get("deployments", [])
            if x.get("name") == sys.argv[1]), ""))' "$1" 2>/dev/null || true
}

TARGETS="direct nginx llmfd unix"
[ -z "$PKNOTE" ] && TARGETS="$TARGETS portkey"
: >"$T/meta"
meta rounds "$ROUNDS"
meta targets "$TARGETS"
meta ladder "$LADDER"
meta stream_ladder "$SLADDER"
meta nstreams "$NSTREAMS"
meta recover_s "$RECOVER"
meta load_rate "$RATE"
meta secs "$SECS"
meta warm "$WARM"
meta lsecs "$LSECS"
meta reconnect_ms "$RECONN"
meta load0 "$(cut -d' ' -f1-3 /proc/loadavg)"
rss_meta idle

# 1. small requests, 1 connection; "again" is llmfd (TCP) measured a
# second time in the round (A/A: how far apart the same thing lands).
for r in $(seq "$ROUNDS"); do
	for t in $TARGETS again; do
		targs "$t"
		run "lat.$t.r$r" "${ARGS[@]}" -c 1 -d "$SECS" --warmup "$WARM"
	done
done

# 2. the throughput frontier: a concurrency ladder, "again" (llmfd over
# TCP a second time) for its A/A. Each connection lives about RECONN ms
# and reconnects: how a step's connections split between the two
# workers of nginx or llmfd moves its p99 more than anything else here
# (16 connections on one worker: p99 ~0.9 ms; 15 and 1: ~2.5 ms, for both
# alike), and a step that kept its first split would be decided by that
# one draw.
RC=()
[ "$RECONN" != 0 ] && RC=(--reconnect-ms "$RECONN")
for r in $(seq "$ROUNDS"); do
	for c in $LADDER; do
		for t in $TARGETS again; do
			targs "$t"
			run "fr.$t.c$c.r$r" "${ARGS[@]}" -c "$c" -d "$LSECS" \
				--warmup 0.5 --timeout 10 "${RC[@]}"
		done
	done
done

# 3. llmfd under a fixed load (open loop), RSS sampled.
rss_start load
run load --tcp "127.0.0.1:$LT" --rate "$RATE" -c 64 -d "$SECS" \
	--warmup "$WARM"
rss_stop load load_peak

# 4. 100 KB prompts, 1 and 16 connections; twice the rounds of the rest
# by default: at 1 connection a round's ratio swings by +-7 % here, and
# the target is decided by the median over the rounds
meta big_rounds "$BROUNDS"
for r in $(seq "$BROUNDS"); do
	for c in 1 16; do
		for t in direct nginx llmfd unix; do
			targs "$t"
			run "big.$t.c$c.r$r" "${ARGS[@]}" -c "$c" \
				--body-size 102400 -d "$SECS" --warmup "$WARM"
		done
	done
done

# 5. the open-circuit path against the healthy one, and 20 % 503s.
U=(--unix "$T/llmfd.sock")
for _ in $(seq 50); do
	"$BUILD/llmf-bench" "${U[@]}" --model circ -c 4 -n 20 >/dev/null 2>&1 ||
		true
	[ "$(circuit dead)" = open ] && break
done
meta circuit "$(circuit dead)"
# One after the other, 64 connections each, in 2 x ROUNDS pairs whose order
# alternates (the open circuit first in odd pairs, second in even ones);
# each pair's ratio is one comparison. Not both at once: sharing the
# workers' queues, a request waits mostly for the other group's requests,
# so a costlier path hardly slows its own group (a deliberate +10 %
# instructions on the open-circuit path moved the at-once ratio by less
# than the noise).
CR=$((2 * ROUNDS))
meta circ_rounds "$CR"
for r in $(seq "$CR"); do
	log "circ.c64.r$r, healthy.c64.r$r: 64 connections each"
	if [ $((r % 2)) = 1 ]; then
		run "circ.c64.r$r" "${U[@]}" --model circ -c 64 -d "$LSECS" \
			--warmup "$WARM"
		run "healthy.c64.r$r" "${U[@]}" -c 64 -d "$LSECS" \
			--warmup "$WARM"
	else
		run "healthy.c64.r$r" "${U[@]}" -c 64 -d "$LSECS" \
			--warmup "$WARM"
		run "circ.c64.r$r" "${U[@]}" --model circ -c 64 -d "$LSECS" \
			--warmup "$WARM"
	fi
done
run mockflaky --tcp "127.0.0.1:$MF" -c 64 -d "$SECS" --warmup "$WARM"
run flaky "${U[@]}" --model flaky -c 64 -d "$SECS" --warmup "$WARM"

# 6. streams of 64 frames 20 ms apart: 16 at once, 64 in all. "again" is
# llmfd measured a second time in the round, at the other end of the order
# (A/A): how far apart two measurements of the same thing land shows how
# much of a difference between targets is the host's noise.
STARGETS="again direct relay nginx llmfd"
if [ -z "$PKNOTE" ]; then
	sargs portkey
	if "$BUILD/llmf-bench" "${ARGS[@]}" --stream -n 2 --frames 64 \
		--timeout 20 >"$T/pk-stream.txt" 2>&1 &&
		grep -q "short of 64 frames: 0;" "$T/pk-stream.txt"; then
		STARGETS="$STARGETS portkey"
	else
		PKNOTE="small requests only: its streams failed here ($(grep -o \
			'errors:.*' "$T/pk-stream.txt" | head -1); the gateway \
			logged: $(grep -m1 -o '[A-Za-z]*Error: .*' "$T/portkey.log" |
				cut -c1-120))"
		log "Portkey: $PKNOTE"
	fi
fi
meta stream_targets "$STARGETS"
# (in the opposite order every other round: a target is not always the
# one right after another's streams)
SREV=$(echo $STARGETS | tr ' ' '\n' | tac | tr '\n' ' ')
# twice the rounds of the rest by default: a p99 of gaps is the noisiest
# figure here, and its target is decided by the median over the rounds
meta stream_rounds "$SROUNDS"
for r in $(seq "$SROUNDS"); do
	if [ $((r % 2)) = 1 ]; then order=$STARGETS; else order=$SREV; fi
	for t in $order; do
		sargs "$t"
		run "st.$t.r$r" "${ARGS[@]}" --stream -c 16 -n 64 --frames 64 \
			--timeout 30
	done
done

# 6b. the same streams side by side: every target at once, 4 streams each,
# in one llmf-bench (--and), the order rotated each round. A host stall
# during a round then falls on all the targets alike, and the comparison
# within the round cancels it, where one target after another each meets
# stalls of its own. Portkey is left out: one node process whose own
# bursts would weigh on every other target.
PTARGETS=${STARGETS/ portkey/}
meta side_targets "$PTARGETS"
read -ra PT <<<"$PTARGETS"
for r in $(seq "$SROUNDS"); do
	k=$(((r - 1) % ${#PT[@]}))
	ALL=()
	for t in "${PT[@]:k}" "${PT[@]:0:k}"; do
		sargs "$t"
		[ ${#ALL[@]} = 0 ] || ALL+=(--and)
		ALL+=(--label "sp.$t.r$r" --json "${ARGS[@]}" --stream -c 4 -n 64
			--frames 64 --timeout 30)
	done
	log "sp.r$r: llmf-bench ${ALL[*]}"
	"$BUILD/llmf-bench" "${ALL[@]}" >"$T/sp.r$r.jsonl" ||
		log "sp.r$r: a target had no successful request"
	cat "$T/sp.r$r.jsonl" >>"$T/all.jsonl"
done

# 7. the most concurrent streams with no frame lost and no gap > 200 ms:
# a ladder per target, up to its first failed step.
LTARGETS=${STARGETS/relay /}
LTARGETS=${LTARGETS/again /}
meta ladder_targets "$LTARGETS"
for t in $LTARGETS; do
	for n in $SLADDER; do
		sargs "$t"
		run "sl.$t.n$n" "${ARGS[@]}" --stream -c "$n" -n "$n" --frames 64 \
			--max-gap-ms 200 --timeout 60
		python3 - "$T/sl.$t.n$n.json" "$n" <<'EOF' || break
import json, sys
d = json.load(open(sys.argv[1]))
n = int(sys.argv[2])
ok = (d.get("ok") == n and not sum(d["errors"].values()) and
      not d.get("frames_short") and not d.get("stalled"))
sys.exit(0 if ok else 1)
EOF
	done
done

# 8. NSTREAMS slow streams at once: RSS before (after an idle pause, so
# the workers have trimmed), at the peak, right after, RECOVER s after.
sleep 7
rss_meta before_streams
rss_start slow
run slow --unix "$T/llmfd.sock" --model slow --stream -c "$NSTREAMS" \
	-n "$NSTREAMS" --frames 20 --timeout 120
rss_stop slow streams_peak
rss_meta after_streams
log "waiting $RECOVER s for memory to come back"
sleep "$RECOVER"
rss_meta after_recover
python3 - "$T/meta" "$NSTREAMS" >>"$T/meta" <<'EOF'
import sys
m = dict(l.rstrip("\n").split("=", 1) for l in open(sys.argv[1]) if "=" in l)
n = int(sys.argv[2])
print("per_stream_kb=%.1f" % ((float(m["rss_streams_peak"]) -
                               float(m["rss_before_streams"])) / n))
EOF

# 9. cross-check with wrk over TCP (64 connections, 2 threads).
if command -v wrk >/dev/null; then
	cat >"$T/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"main","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
EOF
	W=""
	for t in "direct $UP" "nginx $PX" "llmfd $LT"; do
		set -- $t
		r=$(wrk -t2 -c64 -d"${SECS}s" -s "$T/post.lua" \
			"http://127.0.0.1:$2/v1/chat/completions" 2>&1 |
			awk '/Requests\/sec/ {print $2}')
		W="$W $1=${r:-?}"
	done
	meta wrk "$W"
fi

# 10. profile the workers (cpu-clock sampling) under load: $1 name, then
# llmf-bench arguments. Top self-time symbols to $T/perf-$1.txt.
profile() {
	local name=$1 W PP
	shift
	W=$(pgrep -P "$LPID" | paste -sd, -)
	perf record -e cpu-clock -F 1999 -p "$W" -o "$T/perf-$name.data" \
		-- sleep "$SECS" >/dev/null 2>&1 &
	PP=$!
	"$BUILD/llmf-bench" "$@" -d "$SECS" >/dev/null || true
	wait $PP || true
	perf report -i "$T/perf-$name.data" --stdio --no-children \
		--sort dso,symbol 2>/dev/null | grep -E '^ +[0-9.]+%' |
		head -25 | sed 's/ *$//' >"$T/perf-$name.txt" || true
}
PROF=${BENCH_PROFILE:-}
if [ -z "$PROF" ]; then
	perf record -e cpu-clock -o "$T/p.test" true >/dev/null 2>&1 &&
		PROF=1 || PROF=0
fi
if [ "$PROF" = 1 ]; then
	profile small --unix "$T/llmfd.sock" -c 64
	profile big --unix "$T/llmfd.sock" -c 8 --body-size 102400
fi

# ---- the report ----
meta load1 "$(cut -d' ' -f1-3 /proc/loadavg)"
meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta machine "$(nproc) CPUs ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo |
	head -1)), $(awk '/MemTotal/ {printf "%.1f GB", $2 / 1048576}' \
	/proc/meminfo) RAM; $(uname -sr); cpuidle $(cat \
	/sys/devices/system/cpu/cpuidle/current_driver 2>/dev/null || echo none)$(
	[ -r /sys/module/haltpoll/parameters/guest_halt_poll_ns ] && echo \
	", guest_halt_poll_ns $(cat /sys/module/haltpoll/parameters/guest_halt_poll_ns)")"
meta versions "nginx $(nginx -v 2>&1 | sed 's|.*/||'); libevent $(pkg-config \
	--modversion libevent 2>/dev/null || echo '?'); Portkey $(sed -n \
	's/.*"version": *"\([^"]*\)".*/\1/p' "$(dirname "$PKJS")/../package.json" \
	2>/dev/null | head -1) on node $(node --version 2>/dev/null || echo '-')"
meta portkey_note "$PKNOTE"
python3 "$ROOT/bench/report.py" "$T" | tee "$OUT"
