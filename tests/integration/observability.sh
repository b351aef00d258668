#!/bin/sh
# Observability checks against the real daemon and llmf-mock upstreams:
# /metrics values before/after known requests (and promtool check metrics),
# access log lines (text and json) for a success and a failure, an exec
# hook and a webhook receiving a fallback event, and a hanging hook that
# must not slow requests down.
#
# usage: tests/integration/observability.sh [BUILD_DIR]   (default: build)
# Standalone until tests/integration/harness.h lands on main.
set -u

BUILD=${1:-${LLMFD_BUILD:-build}}
BUILD=$(cd "$BUILD" && pwd) || exit 2
DIR=$(mktemp -d /tmp/llmfd-obs.XXXXXX)
PIDS=""
FAILS=0
CHECKS=0

cleanup() {
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
	if [ "$FAILS" -eq 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$DIR"; fi
}
trap cleanup EXIT INT TERM

ok() { CHECKS=$((CHECKS + 1)); echo "ok   $*"; }
bad() { CHECKS=$((CHECKS + 1)); FAILS=$((FAILS + 1)); echo "FAIL $*"; }
check() { # check "what" command...
	what=$1; shift
	if "$@"; then ok "$what"; else bad "$what"; fi
}

# Wait up to $2 tenths of a second for file $1 to be non-empty.
wait_file() {
	n=0
	while [ ! -s "$1" ] && [ $n -lt "$2" ]; do sleep 0.1; n=$((n + 1)); done
	[ -s "$1" ]
}

# Start a mock named $1; its port goes to the variable named $2.
mock() { # name var args...
	name=$1 var=$2; shift 2
	"$BUILD/llmf-mock" --port 0 --port-file "$DIR/$name.port" --name "$name" \
	    "$@" >/dev/null 2>"$DIR/$name.log" &
	PIDS="$PIDS $!"
	wait_file "$DIR/$name.port" 50 || { echo "mock $name did not start"; exit 1; }
	eval "$var=\$(cat \"\$DIR/\$name.port\")"
}

mock good GOOD
mock bad BAD --mode status --status 503
mock sink SINK

cat >"$DIR/hook.sh" <<EOF
#!/bin/sh
cat >>"$DIR/hook.out"
echo "env=\$LLMFD_EVENT key=\${OPENAI_API_KEY:-none}" >>"$DIR/hook.env"
if [ -f "$DIR/hang" ]; then exec sleep 60; fi
EOF
chmod +x "$DIR/hook.sh"

# Write the config; $1 = log_format.
write_conf() {
	cat >"$DIR/llmfd.conf" <<EOF
daemon = {
	workers = 2;
	listen = "$DIR/llmfd.sock";
	health_table = "$DIR/health";
	log_level = "info";
	log_format = "$1";
	access_log = "$DIR/access.log";
	on_event_exec = "$DIR/hook.sh";
	on_event_webhook = "http://127.0.0.1:$SINK/hook/v1/chat/completions";
};
router = { num_retries = 0; allowed_fails = 100; circuit_failure_threshold = 1000; };
deployments = (
	{ name = "bad"; group = "primary"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$BAD/v1"; api_key = "\$OPENAI_API_KEY"; },
	{ name = "good"; group = "backup"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$GOOD/v1"; api_key = "\$OPENAI_API_KEY"; },
	{ name = "bad2"; group = "broken"; provider = "openai"; model = "m";
	  base_url = "http://127.0.0.1:$BAD/v1"; api_key = "\$OPENAI_API_KEY"; }
);
fallbacks = ( { group = "primary"; to = [ "backup" ]; } );
EOF
}

export OPENAI_API_KEY=sk-secret-do-not-leak
write_conf text
"$BUILD/llmfd" -c "$DIR/llmfd.conf" 2>"$DIR/llmfd.log" &
LLMFD=$!
PIDS="$PIDS $LLMFD"
n=0
while [ ! -S "$DIR/llmfd.sock" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
sleep 0.3
if ! kill -0 "$LLMFD" 2>/dev/null || [ ! -S "$DIR/llmfd.sock" ]; then
	echo "llmfd did not start:"; cat "$DIR/llmfd.log"; FAILS=1; exit 1
fi

req() { # model [stream]
	curl -s --max-time 10 --unix-socket "$DIR/llmfd.sock" -o "$DIR/last.body" \
	    -w '%{http_code}' http://x/v1/chat/completions \
	    -H 'content-type: application/json' \
	    -d "{\"model\":\"$1\",\"stream\":${2:-false},\"messages\":[{\"role\":\"user\",\"content\":\"PROMPT-TEXT\"}]}"
}
scrape() { curl -s --max-time 5 --unix-socket "$DIR/llmfd.sock" http://x/metrics; }
# value of one series in a scrape file (0 if absent)
val() { awk -v s="$2" 'index($0, s " ") == 1 { print $NF; f = 1 } END { if (!f) print 0 }' "$1"; }
L_GOOD='{deployment="good",group="backup",provider="openai"}'
L_BAD='{deployment="bad",group="primary",provider="openai"}'

# ---- /metrics before and after known requests ----
scrape >"$DIR/m0"
check "GET /metrics has samples" grep -q '^llmfd_requests_total 0$' "$DIR/m0"
check "GET /metrics answers with text/plain; version=0.0.4" sh -c \
    "curl -s -D - -o /dev/null --unix-socket '$DIR/llmfd.sock' http://x/metrics | grep -qi '^content-type: text/plain; version=0.0.4'"
check "promtool check metrics (idle)" sh -c "promtool check metrics <'$DIR/m0' >'$DIR/promtool0.out' 2>&1"

check "success via primary->backup fallback answers 200" test "$(req primary)" = 200
check "stream success answers 200" test "$(req backup true)" = 200
check "failure on broken group answers 503" test "$(req broken)" = 503
scrape >"$DIR/m1"
check "promtool check metrics (after traffic)" sh -c "promtool check metrics <'$DIR/m1' >'$DIR/promtool1.out' 2>&1"

d() { echo "$(val "$DIR/m1" "$1") $(val "$DIR/m0" "$1")" | awk '{ print $1 - $2 }'; }
check "requests_total +3" test "$(d llmfd_requests_total)" = 3
check "attempts_total{good} +2" test "$(d "llmfd_attempts_total$L_GOOD")" = 2
check "attempts_total{bad} +1" test "$(d "llmfd_attempts_total$L_BAD")" = 1
check "outcomes{good,success} +2" test \
    "$(d 'llmfd_attempt_outcomes_total{deployment="good",group="backup",provider="openai",class="success"}')" = 2
check "outcomes{bad,transient} +1" test \
    "$(d 'llmfd_attempt_outcomes_total{deployment="bad",group="primary",provider="openai",class="transient"}')" = 1
check "fallbacks_from{bad} +1" test "$(d "llmfd_fallbacks_from_total$L_BAD")" = 1
check "fallbacks_to{good} +1" test "$(d "llmfd_fallbacks_to_total$L_GOOD")" = 1
check "tokens_in{good} +10 (mock usage 10,5; the stream asked for none)" test "$(d "llmfd_tokens_in_total$L_GOOD")" = 10
check "tokens_out{good} +5" test "$(d "llmfd_tokens_out_total$L_GOOD")" = 5
check "duration histogram +Inf == _count == 2" sh -c \
    "test \"\$(awk '/^llmfd_request_duration_seconds_bucket\\{deployment=\"good\".*le=\"\\+Inf\"/ {print \$NF}' '$DIR/m1')\" = 2 &&
     test \"\$(awk '/^llmfd_request_duration_seconds_count\\{deployment=\"good\"/ {print \$NF}' '$DIR/m1')\" = 2"
check "ttft histogram counted the stream" test \
    "$(val "$DIR/m1" "llmfd_time_to_first_token_seconds_count$L_GOOD")" = 1
check "deployment_state{good} = 0" test "$(val "$DIR/m1" "llmfd_deployment_state$L_GOOD")" = 0
check "config_generation = 1" test "$(val "$DIR/m1" llmfd_config_generation)" = 1
scrape >"$DIR/m1b"
check "every worker reports the same numbers" sh -c \
    "grep -v '_used\\|state\\|inflight' '$DIR/m1' >'$DIR/a'; grep -v '_used\\|state\\|inflight' '$DIR/m1b' >'$DIR/b'; cmp -s '$DIR/a' '$DIR/b'"

# ---- access log (text) ----
sleep 0.2
check "access log has 3 lines" test "$(wc -l <"$DIR/access.log")" = 3
check "text success line" grep -q \
    'model=primary deployment=good provider=openai status=200 code=- attempts=2 .* ttft_ms=-1 prompt_tokens=10 completion_tokens=5 stream=0 trail=bad:503:transient:' "$DIR/access.log"
check "text stream line has ttft" grep -Eq \
    'model=backup deployment=good .* status=200 .* ttft_ms=[0-9]+ .* stream=1 trail=-' "$DIR/access.log"
check "text failure line" grep -Eq \
    'model=broken deployment=- provider=- status=503 code=all_deployments_failed attempts=1 .* trail=bad2:503:transient:[0-9]+$' "$DIR/access.log"
check "no prompt, answer or key in the access log" sh -c \
    "! grep -q 'PROMPT-TEXT\\|says hi\\|sk-secret' '$DIR/access.log'"

# ---- exec hook and webhook got the fallback event ----
check "exec hook got the fallback event as JSON on stdin" sh -c \
    "wait_file() { n=0; while ! grep -q fallback \"\$1\" 2>/dev/null && [ \$n -lt 50 ]; do sleep 0.1; n=\$((n+1)); done; }; wait_file '$DIR/hook.out';
     grep -q '^{\"type\":\"fallback\",\"time\":\"20[0-9-]*T[0-9:.]*Z\",\"deployment\":\"good\",\"text\":\"req-[0-9a-f-]* bad -> good\",\"seq\":[0-9]*}\$' '$DIR/hook.out'"
check "exec hook ran with a clean environment (no keys)" sh -c \
    "grep -q 'env=fallback key=none' '$DIR/hook.env'"
n=0
while ! curl -s "http://127.0.0.1:$SINK/_mock/requests" | grep -q 'fallback' && [ $n -lt 50 ]; do
	sleep 0.1; n=$((n + 1))
done
check "webhook POSTed the fallback event" sh -c \
    "curl -s 'http://127.0.0.1:$SINK/_mock/requests' | grep -q '\"path\":\"/hook/v1/chat/completions\".*type.*fallback.*bad -> good'"

# ---- the webhook retries a failing endpoint (503, 503, then 200) ----
curl -s -X POST "http://127.0.0.1:$SINK/_mock/reset" >/dev/null
curl -s -X POST "http://127.0.0.1:$SINK/_mock/config" \
    -d '{"mode":"status","status":503,"fail_first":2}' >/dev/null
req primary >/dev/null
n=0
while [ "$(curl -s "http://127.0.0.1:$SINK/_mock/stats" | sed 's/.*"ok":\([0-9]*\).*/\1/')" != 1 ] && [ $n -lt 50 ]; do
	sleep 0.1; n=$((n + 1))
done
check "webhook retried: 2 failed tries, then delivered" sh -c \
    "curl -s 'http://127.0.0.1:$SINK/_mock/stats' | grep -q '\"requests\":3,.*\"ok\":1,\"failed\":2'"
check "webhook retries were logged" grep -q 'on_event_webhook: try 2 failed (status 503); retrying' "$DIR/llmfd.log"
curl -s -X POST "http://127.0.0.1:$SINK/_mock/config" -d '{"mode":"ok"}' >/dev/null

# ---- a hanging hook does not slow requests ----
touch "$DIR/hang"
t0=$(date +%s%N)
for i in 1 2 3 4 5 6 7 8; do req primary >/dev/null; done
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
check "8 fallback requests with hanging hooks took ${ms} ms (< 2000)" test "$ms" -lt 2000
check "hanging hooks are killed after 5 s" sh -c \
    "n=0; while ! grep -q 'still running after 5 s; killed' '$DIR/llmfd.log' && [ \$n -lt 80 ]; do sleep 0.1; n=\$((n+1)); done;
     grep -q 'still running after 5 s; killed' '$DIR/llmfd.log'"
rm -f "$DIR/hang"

# ---- reload to json: new workers reopen the access log ----
write_conf json
kill -HUP "$LLMFD"
sleep 1
code=$(req backup)
code2=$(req broken)
sleep 0.2
last2=$(tail -n 2 "$DIR/access.log")
check "json lines after reload ($code, $code2)" sh -c "printf '%s\n' '$last2' | grep -q '^{\"time\":\"[^\"]*Z\",\"id\":\"req-' "
check "json success fields" sh -c "printf '%s\n' '$last2' | grep -q '\"model\":\"backup\",\"deployment\":\"good\",\"provider\":\"openai\",\"status\":200,\"code\":\"-\",\"attempts\":1,.*\"prompt_tokens\":10,\"completion_tokens\":5,\"stream\":false,\"trail\":\"-\"}'"
check "json failure fields" sh -c "printf '%s\n' '$last2' | grep -q '\"model\":\"broken\",\"deployment\":\"-\",.*\"status\":503,\"code\":\"all_deployments_failed\",.*\"trail\":\"bad2:503:transient:[0-9]*\"}'"
scrape >"$DIR/m2"
check "config_generation = 2 after reload" test "$(val "$DIR/m2" llmfd_config_generation)" = 2

echo "$CHECKS checks, $FAILS failed${FAILS:+ (logs in $DIR)}"
[ "$FAILS" -eq 0 ]
