# llmfd — one non-recursive Makefile.
# make | make check | make asan | make demo | make bench | make install | make deps
# make sdk-deps (node and the npm SDK clients for the SDK tests)

PREFIX  ?= /usr/local
DESTDIR ?=
BUILD   ?= build
CC      ?= cc
PKGS     = libevent libevent_openssl openssl libconfig
WARN     = -Wall -Wextra -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes \
           -Wshadow -Wpointer-arith -Wcast-qual -Wsign-compare -Werror
OPT     ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -I. -MMD -MP $(SAN)
LDFLAGS += $(SAN)
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
# hiredis: only the master's fleet syncer (daemon/fleet.c) talks to Redis.
FLEET_PKGS  = hiredis
FLEET_LIBS := $(shell pkg-config --libs $(FLEET_PKGS) 2>/dev/null || echo -lhiredis)
CRIT_LIBS  := $(shell pkg-config --libs criterion 2>/dev/null)
LIBS        = $(PKG_LIBS) -lm

COMMON_SRC := $(sort $(wildcard common/*.c))
WORKER_SRC := $(sort $(wildcard worker/*.c worker/providers/*.c worker/ingress/*.c))
DAEMON_SRC := $(sort $(wildcard daemon/*.c))
UNIT_SRC   := $(sort $(wildcard tests/unit/*.c))
INTEG_SRC  := $(sort $(wildcard tests/integration/*.c))

obj = $(patsubst %.c,$(BUILD)/obj/%.o,$(1))
COMMON_OBJ := $(call obj,$(COMMON_SRC))
WORKER_OBJ := $(call obj,$(WORKER_SRC))
DAEMON_OBJ := $(call obj,$(DAEMON_SRC))
LIBCOMMON  := $(BUILD)/libllmfd.a

BINS = $(BUILD)/llmfd $(BUILD)/llmfctl $(BUILD)/llmf-mock \
       $(if $(wildcard tools/bench.c),$(BUILD)/llmf-bench) \
       $(if $(wildcard tools/chaos.c),$(BUILD)/llmf-chaos) \
       $(BUILD)/llmf-relay

all: $(BINS)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(LIBCOMMON): $(COMMON_OBJ) $(WORKER_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/llmfd: $(DAEMON_OBJ) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(FLEET_LIBS)

$(BUILD)/llmfctl: $(call obj,tools/llmfctl.c) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/llmf-mock: $(call obj,tools/mock.c) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/llmf-bench: $(call obj,tools/bench.c) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/llmf-relay: $(call obj,tools/relay.c)
	$(CC) $(LDFLAGS) -o $@ $^ -lpthread

$(BUILD)/llmf-chaos: $(call obj,tools/chaos.c) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lpthread

$(BUILD)/test_unit: $(call obj,$(UNIT_SRC)) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(CRIT_LIBS)

$(BUILD)/test_integration: $(call obj,$(INTEG_SRC)) $(LIBCOMMON)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) $(CRIT_LIBS)

tests: $(BUILD)/test_unit $(BUILD)/test_integration

# Debian packages the build, the tests, the demo and the bench need.
DEB_PKGS = libevent-dev libssl-dev libjsmn-dev libconfig-dev libcriterion-dev \
           pkg-config openssl curl python3-jsonschema python3-yaml prometheus \
           mandoc libhiredis-dev redis-server
BENCH_PKGS = nginx-light wrk
# Node.js for the SDK tests (tests/sdk), from Debian only when no node and
# npm are on the PATH (a newer Node.js from elsewhere is kept).
NODE_PKGS = nodejs npm
deps:
	@missing=""; for p in $(DEB_PKGS) $(EXTRA_PKGS); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	{ command -v node && command -v npm; } >/dev/null 2>&1 || \
	  missing="$$missing $(NODE_PKGS)"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# The official openai and @anthropic-ai/sdk npm clients that
# tests/integration/test_sdk.c runs, installed from tests/sdk/package-lock.json
# into tests/sdk/node_modules (again whenever the lock file changes).
SDK_DIR   = tests/sdk
SDK_STAMP = $(SDK_DIR)/node_modules/.package-lock.json
sdk-deps: deps
	@$(MAKE) --no-print-directory -s $(SDK_STAMP)

$(SDK_STAMP): $(SDK_DIR)/package.json $(SDK_DIR)/package-lock.json
	cd $(SDK_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# The whole suite: unit tests, then integration tests against the real binaries.
check: deps sdk-deps
	@$(MAKE) --no-print-directory all tests
	@LLMFD_BUILD=$(abspath $(BUILD)) tests/run.sh $(BUILD)

asan: deps sdk-deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" all tests
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:log_path=$(abspath build-asan)/san/asan \
	  UBSAN_OPTIONS=print_stacktrace=1:log_path=$(abspath build-asan)/san/ubsan \
	  LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp) \
	  LLMFD_SAN_DIR=$(abspath build-asan)/san \
	  LLMFD_BUILD=$(abspath build-asan) tests/run.sh build-asan

# The tests with llmfd and the workers it forks under valgrind's memcheck;
# tests/run.sh reads every process's log: no memcheck error and no definite
# leak, or the run fails. Slow (about 20 minutes), so not part of `make
# check`. VALGRIND_FILTER is a criterion --filter; by default it leaves out
# what cannot hold under valgrind: llmfctl's reload commands (the master's
# process name is valgrind's), the raised open-files limit (valgrind keeps
# some for itself) and a reload storm with a 1 s drain timeout (requests
# outlast it at valgrind's speed).
VALGRIND_FILTER ?= !(ops/bad_reload_keeps_old_config|ops/reload_keeps_counters_of_survivors|ops/reload_under_load_loses_nothing|hardening/nofile_soft_limit_raised|reload/sighup_storm_under_keepalive_load)
valgrind: deps sdk-deps
	@$(MAKE) --no-print-directory deps EXTRA_PKGS="valgrind"
	@$(MAKE) --no-print-directory all tests
	@LLMFD_VALGRIND_DIR=$(abspath $(BUILD))/vg \
	  LLMFD_TEST_FILTER="$(VALGRIND_FILTER)" \
	  LLMFD_BUILD=$(abspath $(BUILD)) tests/run.sh $(BUILD)

demo: deps
	@$(MAKE) --no-print-directory all
	@tools/demo.sh $(BUILD)

# Portkey's gateway for comparison (bench/portkey); the bench skips it with
# a note when npm cannot install it or it does not run.
PORTKEY_DIR   = bench/portkey
PORTKEY_STAMP = $(PORTKEY_DIR)/node_modules/.package-lock.json
bench:
	@$(MAKE) --no-print-directory deps EXTRA_PKGS="$(BENCH_PKGS)"
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory -s $(PORTKEY_STAMP) || \
	  echo "bench: Portkey's gateway could not be installed; skipped"
	@bench/run.sh $(BUILD)

$(PORTKEY_STAMP): $(PORTKEY_DIR)/package.json $(PORTKEY_DIR)/package-lock.json
	cd $(PORTKEY_DIR) && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# A soak under random upstream faults and client abuse (docs/chaos.md):
# CHAOS_SECONDS in all, loopback and a temp dir only; ends "N passed, N
# failed". Not part of `make check`. CHAOS_ARGS passes more options.
CHAOS_SECONDS ?= 180
.PHONY: chaos
chaos: deps
	@$(MAKE) --no-print-directory all
	@$(BUILD)/llmf-chaos --build $(abspath $(BUILD)) \
	  --seconds $(CHAOS_SECONDS) $(CHAOS_ARGS)

# libFuzzer targets (clang); FUZZ_SECONDS each. Not part of `make check`.
FUZZ_SECONDS ?= 60
FUZZ_SRC = $(filter-out common/status.c,$(COMMON_SRC)) \
           $(wildcard worker/providers/*.c worker/ingress/*.c) \
           worker/upstream.c worker/conn.c worker/http.c worker/ident.c \
           tests/fuzz/stubs.c
fuzz: deps
	@$(MAKE) --no-print-directory deps EXTRA_PKGS="clang libclang-rt-14-dev"
	@mkdir -p $(BUILD)/fuzz
	@for t in json json_top json_pick sse evstream providers ingress_messages ingress_responses upstream conn http; do \
	  clang -std=c11 -D_GNU_SOURCE -g -O1 -I. $(PKG_CFLAGS) \
	    -fsanitize=fuzzer,address,undefined \
	    -o $(BUILD)/fuzz/fuzz_$$t tests/fuzz/fuzz_$$t.c $(FUZZ_SRC) \
	    $(PKG_LIBS) -lm || exit 1; \
	  mkdir -p $(BUILD)/fuzz/corpus_$$t; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s"; \
	  $(BUILD)/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) \
	    -max_len=4096 $(BUILD)/fuzz/corpus_$$t tests/data \
	    $$(test -d tests/fuzz/seeds/$$t && echo tests/fuzz/seeds/$$t) \
	    2>&1 | tail -3 || exit 1; \
	done

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

# Binaries, systemd units (binary path following PREFIX), the default
# config (an existing one is kept) and the man pages.
UNITDIR ?= /lib/systemd/system
MANDIR  ?= $(PREFIX)/share/man
install: all
	install -d $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/bin \
	  $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
	  $(DESTDIR)/etc/llmfd $(DESTDIR)$(UNITDIR)
	install -m 0755 $(BUILD)/llmfd $(DESTDIR)$(PREFIX)/sbin/llmfd
	install -m 0755 $(BUILD)/llmfctl $(DESTDIR)$(PREFIX)/bin/llmfctl
	[ -e $(DESTDIR)/etc/llmfd/llmfd.conf ] || \
	  install -m 0640 llmfd.conf $(DESTDIR)/etc/llmfd/llmfd.conf
	sed 's|/usr/local/sbin/|$(PREFIX)/sbin/|g' docs/llmfd.service \
	  >$(DESTDIR)$(UNITDIR)/llmfd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/llmfd.service
	install -m 0644 docs/llmfd.socket $(DESTDIR)$(UNITDIR)/llmfd.socket
	install -m 0644 docs/llmfd.8 docs/llmfctl.8 $(DESTDIR)$(MANDIR)/man8/
	install -m 0644 docs/llmfd.conf.5 $(DESTDIR)$(MANDIR)/man5/

clean:
	rm -rf build build-asan

.PHONY: all tests deps sdk-deps check asan valgrind demo bench fuzz format install clean
-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
