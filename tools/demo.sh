#!/usr/bin/env bash
# make demo: start two mock upstreams and llmfd on the shipped llmfd.conf,
# show a failover (the primary answers 503, the backup answers), print
# `llmfctl status`, and stop everything this script started.
set -u
B=${1:-build}
DIR=/tmp/llmfd-demo
mkdir -p "$DIR"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT INT TERM

"$B/llmf-mock" --port 18081 --name primary --mode status --status 503 \
	>"$DIR/primary.log" 2>&1 &
pids+=($!)
"$B/llmf-mock" --port 18082 --name backup >"$DIR/backup.log" 2>&1 &
pids+=($!)
export LLMFD_DEMO_KEY=sk-demo-not-a-real-key
"$B/llmfd" -c llmfd.conf >"$DIR/llmfd.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
	curl -sf --unix-socket "$DIR/llmfd.sock" http://llmfd/healthz >/dev/null && break
	sleep 0.1
done

req='{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}]}'
echo "== 1. the primary upstream answers 503: llmfd retries, then falls back"
curl -s -D - --unix-socket "$DIR/llmfd.sock" http://llmfd/v1/chat/completions \
	-H 'Content-Type: application/json' -d "$req" | grep -iE '^x-llmfd|^HTTP|content'
echo
echo "== 2. streaming through the fallback"
curl -sN --unix-socket "$DIR/llmfd.sock" http://llmfd/v1/chat/completions \
	-d '{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}' | head -4
echo "..."
echo
echo "== 3. llmfctl status"
"$B/llmfctl" -t "$DIR/health" status
echo
echo "== 4. the attempt trail the log recorded"
grep -E 'attempt|-> ' "$DIR/llmfd.log" | head -8
