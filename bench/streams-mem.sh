#!/bin/bash
# bench/streams-mem.sh [BUILD] [STREAMS] [WORKERS] -- llmfd's memory per
# stream, alone, in about a minute: the measurement of `make bench`'s
# "streams at once" stage (bench/run.sh, step 8) without the rest.
#
# Starts llmf-mock (20 frames 500 ms apart) and llmfd (WORKERS workers,
# default 2) in a temp dir, warms up with 20 streams, waits for the workers
# to trim, then opens STREAMS (2000) streams at once over the Unix socket
# with llmf-bench and samples the workers' RSS every 0.2 s. Prints the
# workers' RSS before, at the peak and 2 s after, and (peak - before) /
# STREAMS. With HEAP=1 it also attaches gdb to each worker HEAP_AT (4)
# seconds in and prints glibc's bytes in use per stream (malloc_stats):
# the live heap, without what the ramp freed but kept resident.
set -u
BUILD=${1:-build}
N=${2:-2000}
W=${3:-2}
T=$(mktemp -d /tmp/llmfd-smem.XXXXXX)
PIDS=()
SAMPLER=""

# Stop what we started, by PID, then remove the temp dir.
cleanup() {
	[ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
	rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for b in llmfd llmf-mock llmf-bench; do
	[ -x "$BUILD/$b" ] || { echo "$BUILD/$b is missing (make all)" >&2; exit 1; }
done
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((2 * N + 100)) ] ||
	echo "warning: RLIMIT_NOFILE $(ulimit -n) is low for $N streams" >&2

. "$(dirname "$0")/lib.sh"

# The workers' RSS and RssAnon in kB: "rss anon".
rss_now() {
	local r=0 a=0 p
	for p in $(pgrep -P "$LPID"); do
		r=$((r + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
		a=$((a + $(awk '/^RssAnon/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
	done
	echo "$r $a"
}

ML=$(free_port)
"$BUILD/llmf-mock" --port "$ML" --name slow --chunks 20 \
	--chunk-delay-ms 500 2>"$T/mock.log" &
PIDS+=($!)
cat >"$T/llmfd.conf" <<EOF
daemon = { workers = $W; listen = "$T/llmfd.sock"; health_table = "$T/health";
	log_level = "warn"; access_log = "off"; };
router = { num_retries = 2; timeout_ms = 120000; attempt_timeout_ms = 60000;
	first_token_timeout_ms = 60000; allowed_fails = 1000000; };
deployments = (
	{ name = "slow"; group = "slow"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$ML/v1"; }
);
EOF
"$BUILD/llmfd" -c "$T/llmfd.conf" 2>"$T/llmfd.log" &
LPID=$!
PIDS+=($LPID)
wait_up "$T/llmfd.sock" || { cat "$T/llmfd.log" >&2; exit 1; }
sleep 0.5
"$BUILD/llmf-bench" --unix "$T/llmfd.sock" --model slow --stream -c 20 \
	-n 20 --frames 20 --timeout 60 >/dev/null 2>&1
sleep 7 # the workers trim their free lists and malloc_trim
read -r B BA <<<"$(rss_now)"
(while :; do rss_now; sleep 0.2; done) >"$T/rss" &
SAMPLER=$!
"$BUILD/llmf-bench" --unix "$T/llmfd.sock" --model slow --stream -c "$N" \
	-n "$N" --frames 20 --timeout 120 >"$T/bench.txt" 2>&1 &
BPID=$!
if [ "${HEAP:-0}" = 1 ]; then
	sleep "${HEAP_AT:-4}"
	for p in $(pgrep -P "$LPID"); do
		gdb -p "$p" -batch -ex 'call (void)malloc_stats()' >/dev/null 2>&1
	done
	sleep 1
	awk -v n="$N" '/^Total \(incl. mmap\):/ { t = 1; next }
		t && /^in use bytes/ { s += $NF; t = 0 }
		END { printf "heap in use (workers, %s s in): %.1f MB, %.2f kB per stream\n",
			ENVIRON["HEAP_AT"] ? ENVIRON["HEAP_AT"] : 4, s / 1048576, s / 1024 / n }' \
		"$T/llmfd.log"
fi
wait "$BPID"
kill "$SAMPLER" 2>/dev/null
wait "$SAMPLER" 2>/dev/null
SAMPLER=""
read -r P PA <<<"$(awk '{ if ($1 > t) { t = $1; a = $2 } } END { print t + 0, a + 0 }' "$T/rss")"
sleep 2
read -r A _ <<<"$(rss_now)"
grep -E '^[0-9]+ ok|short of|^errors' "$T/bench.txt"
echo "workers RSS, kB: before $B, peak $P, 2 s after $A (anon: before $BA, peak $PA)"
awk -v b="$B" -v p="$P" -v n="$N" \
	'BEGIN { printf "memory per stream: %.2f kB ((peak - before) / %d)\n", (p - b) / n, n }'
