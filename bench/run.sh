#!/usr/bin/env bash
# bench/run.sh BUILD_DIR -- the llmfd benchmark (run by `make bench`).
#
# Starts, on loopback in a temp dir: nginx as a fixed-answer upstream, nginx
# as a plain keep-alive reverse proxy in front of it, llmf-mock instances
# (20 % 503s, slow streams) and llmfd (2 workers, Unix socket + TCP). Drives
# them with llmf-bench, samples llmfd's RSS, and writes a Markdown report to
# stdout and bench/RESULTS.md. Every process is stopped by PID on exit.
#
# Environment: BENCH_SECS (default 4) per measurement, BENCH_ROUNDS (default
# 3) interleaved rounds of the throughput/latency runs, of which the best is
# kept (the host may be shared), BENCH_STREAMS (default 10000),
# BENCH_PROFILE (default 1 when `perf` samples here) for a cpu-clock profile
# of the workers, BENCH_KEEP=1 to keep the temp dir.
set -euo pipefail

BUILD=$(cd "${1:-build}" && pwd)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${BENCH_SECS:-4}
ROUNDS=${BENCH_ROUNDS:-3}
WARM=1
NSTREAMS=${BENCH_STREAMS:-10000}
OUT="$ROOT/bench/RESULTS.md"
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

for b in llmfd llmfctl llmf-mock llmf-bench; do
	[ -x "$BUILD/$b" ] || die "$BUILD/$b is missing (make all)"
done
command -v nginx >/dev/null || die "nginx is missing (make deps)"
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((NSTREAMS + 100)) ] ||
	log "warning: RLIMIT_NOFILE $(ulimit -n) is low for $NSTREAMS streams"

# A TCP port on 127.0.0.1 nobody listens on.
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 20000))
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

# Wait until a TCP port (or a Unix socket path) accepts.
wait_up() {
	for _ in $(seq 100); do
		if [[ $1 == /* ]]; then
			[ -S "$1" ] && return 0
		else
			(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		fi
		sleep 0.05
	done
	die "nothing listening on $1"
}

UP=$(free_port)
PX=$(free_port)
LT=$(free_port)
MF=$(free_port)
MS=$(free_port)

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
worker_rlimit_nofile 65000;
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
# (b) a plain keep-alive reverse proxy with as many workers as llmfd.
nginx_conf px 2 "	upstream up { server 127.0.0.1:$UP; keepalive 64; }
	server {
		listen 127.0.0.1:$PX;
		location / {
			proxy_pass http://up;
			proxy_http_version 1.1;
			proxy_set_header Connection \"\";
		}
	}"

nginx -e "$T/up/error.log" -c "$T/up/nginx.conf" -p "$T/up" &
PIDS+=($!)
nginx -e "$T/px/error.log" -c "$T/px/nginx.conf" -p "$T/px" &
PIDS+=($!)
"$BUILD/llmf-mock" --port "$MF" --name flaky --mode status --status 503 \
	--fail-percent 20 2>"$T/mock-flaky.log" &
PIDS+=($!)
"$BUILD/llmf-mock" --port "$MS" --name slow --chunks 20 \
	--chunk-delay-ms 500 2>"$T/mock-slow.log" &
PIDS+=($!)

# (c) llmfd: group main -> the nginx upstream; circ -> a dead port first,
# then the upstream; flaky -> the 20 % mock; slow -> the slow-stream mock.
cat >"$T/llmfd.conf" <<EOF
daemon = { workers = 2; listen = "llmfd.sock"; health_table = "health";
	log_level = "warn"; tcp = "127.0.0.1:$LT";
	# like the nginx configs: no access log on the measured path
	access_log = "off"; };
router = { num_retries = 2; backoff_base_ms = 10; backoff_max_ms = 50;
	timeout_ms = 60000; attempt_timeout_ms = 20000;
	first_token_timeout_ms = 20000;
	# high enough that the 20 % 503 deployment (every fifth request fails,
	# 64 at once) never trips it; the dead one gets there in warm-up
	circuit_failure_threshold = 20; circuit_recovery_s = 3600;
	circuit_max_s = 3600;
	# Cooldown is kept out of the way: with queue_when_cooling, a cooled
	# single-deployment group makes requests wait out cooldown_s (30 s)
	# instead of trying it anyway (see RESULTS.md, findings).
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
	{ name = "slow"; group = "slow"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$MS/v1"; }
);
EOF
"$BUILD/llmfd" -c "$T/llmfd.conf" 2>"$T/llmfd.log" &
LPID=$!
PIDS+=($LPID)
for p in "$UP" "$PX" "$LT" "$MF" "$MS" "$T/llmfd.sock"; do wait_up "$p"; done
sleep 0.3
kill -0 "$LPID" 2>/dev/null || { cat "$T/llmfd.log" >&2; die "llmfd died"; }

# ---- measuring ----

# RSS in kB of the llmfd master and of its workers (summed): "master workers".
rss_now() {
	local m w=0 p
	m=$(awk '/^VmRSS/ {print $2}' "/proc/$LPID/status" 2>/dev/null || echo 0)
	for p in $(pgrep -P "$LPID"); do
		w=$((w + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" \
			2>/dev/null || echo 0)))
	done
	echo "$m $w"
}

# Sample RSS every 0.2 s into $T/rss.$1 until rss_stop.
rss_start() {
	(while :; do rss_now; sleep 0.2; done) >"$T/rss.$1" &
	SAMPLER=$!
}

# Stop sampling; print the peak "master workers total" in MB for $1.
rss_stop() {
	kill "$SAMPLER" 2>/dev/null || true
	wait "$SAMPLER" 2>/dev/null || true
	SAMPLER=""
	awk '{ if ($1 > m) m = $1; if ($2 > w) w = $2;
	       if ($1 + $2 > t) t = $1 + $2 }
	     END { printf "%.1f %.1f %.1f\n", m / 1024, w / 1024, t / 1024 }' \
		"$T/rss.$1"
}

# One llmf-bench run: $1 label, then llmf-bench arguments. JSON to $T/$1.json.
run() {
	local label=$1
	shift
	log "$label: llmf-bench $*"
	"$BUILD/llmf-bench" --label "$label" --json "$@" >"$T/$label.json" ||
		log "$label: no successful request"
	cat "$T/$label.json" >>"$T/all.jsonl"
}

# Keep, of the rounds LABEL.rN of a measurement, the one with the most
# req/s as LABEL.
best() {
	local label=$1 f top=-1 r
	for f in "$T/$label".r*.json; do
		r=$(sed -n 's/.*"rps":\([0-9.]*\).*/\1/p' "$f")
		if awk "BEGIN { exit !(${r:-0} > $top) }"; then
			top=${r:-0}
			cp "$f" "$T/$label.json"
		fi
	done
}

# A value from a run's JSON: $1 label, $2 top-level key or obj.key.
val() {
	local f="$T/$1.json" k=$2
	if [[ $k == *.* ]]; then
		sed -n "s/.*\"${k%%.*}\":{[^}]*\"${k#*.}\":\([0-9.]*\).*/\1/p" "$f"
	else
		sed -n "s/.*\"$k\":\([0-9.]*\).*/\1/p" "$f"
	fi
}

# Total errors of a run.
errs() {
	sed -n 's/.*"errors":{\([^}]*\)}.*/\1/p' "$T/$1.json" |
		tr ',' '\n' | awk -F: '{ s += $2 } END { print s + 0 }'
}

# awk arithmetic: calc EXPR.
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }

# "yes"/"NO" for an awk condition.
met() { awk "BEGIN { exit !($1) }" && echo "yes" || echo "**NO**"; }

# The state of the circuit of deployment $1.
circuit() {
	"$BUILD/llmfctl" -t "$T/health" status --json |
		jq -r --arg d "$1" '.deployments[] | select(.name == $d) | .circuit' \
			2>/dev/null ||
		"$BUILD/llmfctl" -t "$T/health" status --json |
		sed -n "s/.*\"name\":\"$1\"[^}]*\"circuit\":\"\([a-z-]*\)\".*/\1/p"
}

U="--unix $T/llmfd.sock"
B="-d $SECS --warmup $WARM"
read -r RM0 RW0 RT0 <<<"$(rss_now | awk '{printf "%.1f %.1f %.1f", $1/1024, $2/1024, ($1+$2)/1024}')"

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

# 1. healthy path: direct, nginx proxy, llmfd TCP, llmfd Unix; 1 and 64
# connections; ROUNDS interleaved rounds, best kept.
rss_start healthy
for r in $(seq "$ROUNDS"); do
	for c in 1 64; do
		run "direct-c$c.r$r" --tcp "127.0.0.1:$UP" -c $c $B
		run "nginx-c$c.r$r" --tcp "127.0.0.1:$PX" -c $c $B
		run "tcp-c$c.r$r" --tcp "127.0.0.1:$LT" -c $c $B
		run "unix-c$c.r$r" $U -c $c $B
	done
done
for l in direct nginx tcp unix; do best "$l-c1"; best "$l-c64"; done
read -r HM HW HT <<<"$(rss_stop healthy)"

# 2. first deployment dead, circuit open: warm up until it opens.
for _ in $(seq 50); do
	"$BUILD/llmf-bench" $U --model circ -c 4 -n 20 >/dev/null 2>&1 || true
	[ "$(circuit dead)" = open ] && break
done
CIRC=$(circuit dead)
log "circuit of 'dead': $CIRC"
rss_start circ
run "circ-c1" $U --model circ -c 1 $B
for r in $(seq "$ROUNDS"); do
	run "circ-c64.r$r" $U --model circ -c 64 $B
	run "unix2-c64.r$r" $U -c 64 $B
done
best circ-c64
best unix2-c64
read -r CM CW CT <<<"$(rss_stop circ)"

# 3. 20 % of upstream requests fail with 503 (llmf-mock --fail-percent).
rss_start flaky
run "mockflaky-c64" --tcp "127.0.0.1:$MF" -c 64 $B
run "flaky-c1" $U --model flaky -c 1 $B
run "flaky-c64" $U --model flaky -c 64 $B
read -r FM FW FT <<<"$(rss_stop flaky)"
FLAKY_STATS=$("$BUILD/llmfctl" -t "$T/health" status --json |
	jq -c '.deployments[] | select(.name == "flaky") |
		{requests, successes, failures, retries}' 2>/dev/null || true)

# 4. 100 KB prompt bodies.
rss_start big
run "bigdirect-c1" --tcp "127.0.0.1:$UP" -c 1 --body-size 102400 $B
run "bignginx-c1" --tcp "127.0.0.1:$PX" -c 1 --body-size 102400 $B
run "big-c1" $U -c 1 --body-size 102400 $B
run "bigdirect-c64" --tcp "127.0.0.1:$UP" -c 64 --body-size 102400 $B
run "big-c64" $U -c 64 --body-size 102400 $B
read -r BM BW BT <<<"$(rss_stop big)"

# 5. many slow streams (20 chunks, 500 ms apart): direct to the mock, then
# through llmfd; RSS sampled while they are all open.
run "slowdirect" --tcp "127.0.0.1:$MS" --stream -c "$NSTREAMS" \
	-n "$NSTREAMS" --timeout 60
read -r SM0 SW0 ST0 <<<"$(rss_now | awk '{printf "%.1f %.1f %.1f", $1/1024, $2/1024, ($1+$2)/1024}')"
rss_start slow
run "slow" $U --model slow --stream -c "$NSTREAMS" -n "$NSTREAMS" \
	--timeout 60
read -r SM SW ST <<<"$(rss_stop slow)"
read -r IM IW IT <<<"$(rss_now | awk '{printf "%.1f %.1f %.1f", $1/1024, $2/1024, ($1+$2)/1024}')"

# 6. cross-check with wrk over TCP (64 connections, 2 threads).
WRK=""
if command -v wrk >/dev/null; then
	cat >"$T/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '{"model":"main","messages":[{"role":"user","content":"hi"}]}'
wrk.headers["Content-Type"] = "application/json"
EOF
	for t in "direct $UP" "nginx $PX" "llmfd $LT"; do
		set -- $t
		r=$(wrk -t2 -c64 -d"${SECS}s" -s "$T/post.lua" \
			"http://127.0.0.1:$2/v1/chat/completions" 2>&1 |
			awk '/Requests\/sec/ {print $2}')
		WRK="$WRK $1=${r:-?}"
		log "wrk $1: $r req/s"
	done
fi

# 7. profile the workers (cpu-clock sampling) under load: $1 name, then
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
	profile small $U -c 64
	profile big $U -c 8 --body-size 102400
fi
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the report ----

row() { # label: description, then the run's numbers as a table row
	printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$2" \
		"$(val "$1" rps)" "$(val "$1" latency_us.p50)" \
		"$(val "$1" latency_us.p90)" "$(val "$1" latency_us.p99)" \
		"$(val "$1" latency_us.p999)" "$(val "$1" ok)" "$(errs "$1")"
}

RATIO=$(calc "$(val unix-c64 rps) / $(val nginx-c64 rps)")
RATIO_TCP=$(calc "$(val tcp-c64 rps) / $(val nginx-c64 rps)")
A50=$(calc "$(val unix-c1 latency_us.p50) - $(val direct-c1 latency_us.p50)")
A99=$(calc "$(val unix-c1 latency_us.p99) - $(val direct-c1 latency_us.p99)")
AT50=$(calc "$(val tcp-c1 latency_us.p50) - $(val direct-c1 latency_us.p50)")
AT99=$(calc "$(val tcp-c1 latency_us.p99) - $(val direct-c1 latency_us.p99)")
N50=$(calc "$(val nginx-c1 latency_us.p50) - $(val direct-c1 latency_us.p50)")
N99=$(calc "$(val nginx-c1 latency_us.p99) - $(val direct-c1 latency_us.p99)")
A64_50=$(calc "$(val unix-c64 latency_us.p50) - $(val direct-c64 latency_us.p50)")
A64_99=$(calc "$(val unix-c64 latency_us.p99) - $(val direct-c64 latency_us.p99)")
CRATIO=$(calc "$(val circ-c64 rps) / $(val unix2-c64 rps)")
SOK=$(val slow ok)
PER=$(calc "($ST - $ST0) * 1024 / ($SOK > 0 ? $SOK : 1)")
TT=$(calc "$(val slow ttft_us.p50) - $(val slowdirect ttft_us.p50)")
TT99=$(calc "$(val slow ttft_us.p99) - $(val slowdirect ttft_us.p99)")
MEMTOT=$(awk '/MemTotal/ {printf "%.1f GB", $2 / 1048576}' /proc/meminfo)
CPU=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)

report() {
	cat <<EOF
# llmfd benchmark results

- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit: \`$REV\`
- machine: $(nproc) CPUs ($CPU), $MEMTOT RAM; $(uname -sr)
- nginx $(nginx -v 2>&1 | sed 's|.*/||'); libevent $(pkg-config --modversion libevent 2>/dev/null || echo '?')
- everything on one host over loopback: llmf-bench (1 thread), the nginx
  upstream (1 worker), nginx proxy (2 workers) and llmfd (2 workers) share
  the same $(nproc) CPUs, so throughput numbers are CPU-bound for all of them.
- load average (1/5/15 min) before the runs: $LOAD0; after: $LOAD1. The
  host may be shared with other work, so the throughput and latency runs
  were done in $ROUNDS interleaved rounds and the best round is shown.
- each measurement: ${SECS} s after ${WARM} s warm-up; closed loop, keep-alive,
  one request in flight per connection; non-streaming unless noted.
  Latencies in microseconds (log-linear histogram, < 1.6 % bucket error).

## Targets

| target | measured | met |
|---|---|---|
| throughput >= 0.8x nginx-proxy at 64 conns (Unix socket) | ${RATIO}x ($(val unix-c64 rps) vs $(val nginx-c64 rps) req/s; TCP ${RATIO_TCP}x) | $(met "$RATIO >= 0.8") |
| added latency at 1 conn, p50 <= 30 us (Unix socket, vs direct) | ${A50} us (TCP ${AT50}; nginx proxy ${N50}) | $(met "$A50 <= 30") |
| added latency at 1 conn, p99 <= 100 us | ${A99} us (TCP ${AT99}; nginx proxy ${N99}) | $(met "$A99 <= 100") |
| open-circuit path within 5 % of healthy throughput (64 conns) | ${CRATIO}x ($(val circ-c64 rps) vs $(val unix2-c64 rps) req/s; circuit: $CIRC) | $(met "$CRATIO >= 0.95") |
| $NSTREAMS concurrent streams: master+workers < 150 MB RSS | ${ST} MB peak ($SOK streams ok) | $(met "$ST < 150 && $SOK >= $NSTREAMS") |

## Throughput and latency

| run | req/s | p50 | p90 | p99 | p99.9 | ok | errors |
|---|---|---|---|---|---|---|---|
$(row direct-c1 "direct to upstream, 1 conn")
$(row nginx-c1 "nginx proxy, 1 conn")
$(row tcp-c1 "llmfd TCP, 1 conn")
$(row unix-c1 "llmfd Unix, 1 conn")
$(row direct-c64 "direct to upstream, 64 conns")
$(row nginx-c64 "nginx proxy, 64 conns")
$(row tcp-c64 "llmfd TCP, 64 conns")
$(row unix-c64 "llmfd Unix, 64 conns")
$(row circ-c1 "llmfd Unix, dead first (circuit $CIRC), 1 conn")
$(row circ-c64 "llmfd Unix, dead first (circuit $CIRC), 64 conns")
$(row unix2-c64 "llmfd Unix, healthy again (same moment), 64 conns")
$(row mockflaky-c64 "direct to mock with 20 % 503, 64 conns")
$(row flaky-c1 "llmfd Unix, upstream 20 % 503, 1 conn")
$(row flaky-c64 "llmfd Unix, upstream 20 % 503, 64 conns")
$(row bigdirect-c1 "100 KB prompt, direct, 1 conn")
$(row bignginx-c1 "100 KB prompt, nginx proxy, 1 conn")
$(row big-c1 "100 KB prompt, llmfd Unix, 1 conn")
$(row bigdirect-c64 "100 KB prompt, direct, 64 conns")
$(row big-c64 "100 KB prompt, llmfd Unix, 64 conns")

Added latency over direct at 64 conns (Unix): p50 ${A64_50} us, p99 ${A64_99} us.
wrk cross-check (TCP, 2 threads, 64 conns, req/s):${WRK:- not run}.
Upstream 20 % 503 through llmfd, the deployment's counters: \`${FLAKY_STATS:-n/a}\`.

## Streams ($NSTREAMS at once, 20 chunks 500 ms apart, llmf-mock)

| run | ok | errors | TTFT p50 | TTFT p99 | completion p50 | completion p99 |
|---|---|---|---|---|---|---|
| direct to mock | $(val slowdirect ok) | $(errs slowdirect) | $(val slowdirect ttft_us.p50) | $(val slowdirect ttft_us.p99) | $(val slowdirect latency_us.p50) | $(val slowdirect latency_us.p99) |
| llmfd Unix | $SOK | $(errs slow) | $(val slow ttft_us.p50) | $(val slow ttft_us.p99) | $(val slow latency_us.p50) | $(val slow latency_us.p99) |

TTFT overhead of llmfd: p50 ${TT} us, p99 ${TT99} us (the $NSTREAMS connects
ramp up during the first second, so TTFT includes connection set-up on both
paths). Memory per stream: ${PER} kB ((peak during the streams - before) /
streams).

## llmfd memory (VmRSS, MB; peak while the scenario ran)

| when | master | workers (sum) | total |
|---|---|---|---|
| idle, after start | $RM0 | $RW0 | $RT0 |
| healthy runs | $HM | $HW | $HT |
| circuit-open runs | $CM | $CW | $CT |
| 20 % 503 runs | $FM | $FW | $FT |
| 100 KB prompts | $BM | $BW | $BT |
| before the streams | $SM0 | $SW0 | $ST0 |
| $NSTREAMS streams | $SM | $SW | $ST |
| idle, after the streams | $IM | $IW | $IT |
EOF
	for p in small big; do
		[ -s "$T/perf-$p.txt" ] || continue
		if [ $p = small ]; then
			d="64 conns, small body"
		else
			d="8 conns, 100 KB body"
		fi
		printf '\n## Profile of the workers: %s (cpu-clock, self)\n\n' "$d"
		printf '```\n'
		cat "$T/perf-$p.txt"
		printf '```\n'
	done
}

report | tee "$OUT"
