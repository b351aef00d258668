#!/usr/bin/env bash
# Run the unit and integration test binaries of BUILD_DIR and print one
# summary line "N passed, N failed". Exits non-zero if anything failed or a
# binary is missing.
set -u

if [ $# -ne 1 ]; then
	echo "usage: $0 BUILD_DIR" >&2
	exit 2
fi
build=$(cd "$1" 2>/dev/null && pwd) || {
	echo "run.sh: no such build dir: $1" >&2
	echo "0 passed, 0 failed"
	exit 1
}
export LLMFD_BUILD="$build"

passed=0
failed=0
status=0

# run NAME ARGS...: run one criterion binary, echo its output, add its
# synthesis line to the totals.
run() {
	local name=$1 bin="$build/$1" out rc line t p f c
	shift
	if [ ! -x "$bin" ]; then
		echo "run.sh: missing $bin" >&2
		status=1
		return
	fi
	out=$(mktemp)
	# A hung runner (criterion 2.4.1 can deadlock its own runner/test IPC
	# on an overloaded machine: Snaipe/Criterion#483, fixed in 2.4.2, which
	# Debian 12 does not ship) is stopped after RUN_TIMEOUT seconds and the
	# binary run once more; the first run's results are discarded.
	timeout -k 10 "${RUN_TIMEOUT:-1500}" "$bin" "$@" 2>&1 | tee "$out"
	rc=${PIPESTATUS[0]}
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "run.sh: $name hung (criterion runner deadlock?); running it again" >&2
		timeout -k 10 "${RUN_TIMEOUT:-1500}" "$bin" "$@" 2>&1 | tee "$out"
		rc=${PIPESTATUS[0]}
	fi
	# "[====] Synthesis: Tested: 3 | Passing: 2 | Failing: 1 | Crashing: 0"
	line=$(sed 's/\x1b\[[0-9;]*m//g' "$out" | grep 'Synthesis:' | tail -n 1)
	rm -f "$out"
	if [ -z "$line" ]; then
		echo "run.sh: $name printed no synthesis line (exit $rc)" >&2
		failed=$((failed + 1))
		status=1
		return
	fi
	t=$(sed -n 's/.*Tested: *\([0-9]*\).*/\1/p' <<<"$line")
	p=$(sed -n 's/.*Passing: *\([0-9]*\).*/\1/p' <<<"$line")
	f=$(sed -n 's/.*Failing: *\([0-9]*\).*/\1/p' <<<"$line")
	c=$(sed -n 's/.*Crashing: *\([0-9]*\).*/\1/p' <<<"$line")
	: "${t:=0}"
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0} + ${c:-0}))
	if [ "$rc" -ne 0 ] || [ "${f:-0}" -ne 0 ] || [ "${c:-0}" -ne 0 ]; then
		status=1
	fi
}

# script NAME CMD...: one check that passes when CMD exits 0.
script() {
	local name=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
	else
		echo "run.sh: $name failed" >&2
		failed=$((failed + 1))
		status=1
	fi
}

# Sanitizer builds: every process (daemon, workers, mocks, tests) writes its
# reports under LLMFD_SAN_DIR; any ASan or UBSan report fails the run.
san_check() {
	local hits
	[ -n "${LLMFD_SAN_DIR:-}" ] || return 0
	hits=$(grep -lE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' \
		"$LLMFD_SAN_DIR"/* 2>/dev/null)
	if [ -n "$hits" ]; then
		echo "run.sh: sanitizer reports:" >&2
		cat $hits >&2
		return 1
	fi
	return 0
}
if [ -n "${LLMFD_SAN_DIR:-}" ]; then
	rm -rf "$LLMFD_SAN_DIR"
	mkdir -p "$LLMFD_SAN_DIR"
fi

# make valgrind: the integration tests ran llmfd (and the workers it forks)
# under memcheck, a log per process in LLMFD_VALGRIND_DIR; any memcheck
# error, a definite leak among them, fails the run.
vg_check() {
	local logs hits done
	logs=$(ls "$LLMFD_VALGRIND_DIR"/vg.* 2>/dev/null | wc -l)
	done=$(grep -l 'ERROR SUMMARY:' "$LLMFD_VALGRIND_DIR"/vg.* 2>/dev/null |
		wc -l)
	# a killed process leaves no summary, but its errors as they happened
	hits=$(grep -lE 'ERROR SUMMARY: [1-9]|== (Invalid (read|write|free)|Conditional jump|Use of uninitialised|Syscall param|Mismatched free|Source and destination overlap)' \
		"$LLMFD_VALGRIND_DIR"/vg.* 2>/dev/null)
	echo "run.sh: valgrind: $logs processes, $done ran to a normal exit" \
		"(the rest were killed by their tests), $(echo $hits | wc -w)" \
		"with errors"
	if [ -n "$hits" ]; then
		cat $hits >&2
		return 1
	fi
	[ "$done" -gt 0 ]
}
if [ -n "${LLMFD_VALGRIND_DIR:-}" ]; then
	rm -rf "$LLMFD_VALGRIND_DIR"
	mkdir -p "$LLMFD_VALGRIND_DIR"
fi

run test_unit -j2
run test_integration --jobs 2 ${LLMFD_TEST_FILTER:+--filter "$LLMFD_TEST_FILTER"}
script schema tests/schema/validate.sh "$build"
[ -n "${LLMFD_SAN_DIR:-}" ] && script sanitizers san_check
[ -n "${LLMFD_VALGRIND_DIR:-}" ] && script valgrind vg_check

echo "$passed passed, $failed failed"
exit $status
