#!/usr/bin/env python3
"""bench/report.py DIR -- the Markdown report of one bench/run.sh run.

DIR holds all.jsonl (one llmf-bench --json result per line, by label) and
meta (key=value lines written by run.sh). Repeated rounds of a measurement
are labelled NAME.rN; the report gives their median and their minimum (or
the worst, for latencies) so that a noisy shared host shows as a spread
rather than as one lucky number.
"""
import json
import os
import statistics
import sys

D = sys.argv[1]
R = {}
with open(os.path.join(D, "all.jsonl")) as f:
    for line in f:
        line = line.strip()
        if line:
            try:
                d = json.loads(line)
                R[d["label"]] = d
            except (ValueError, KeyError):
                pass
M = {}
with open(os.path.join(D, "meta")) as f:
    for line in f:
        if "=" in line:
            k, v = line.rstrip("\n").split("=", 1)
            M[k] = v
ROUNDS = int(M.get("rounds", "1"))
CROUNDS = int(M.get("circ_rounds", str(ROUNDS)))
SROUNDS = int(M.get("stream_rounds", str(ROUNDS)))
BROUNDS = int(M.get("big_rounds", str(ROUNDS)))
TARGETS = M.get("targets", "direct nginx llmfd unix").split()
NAMES = {
    "direct": "direct to upstream",
    "relay": "bare relay (no proxy work)",
    "nginx": "nginx proxy_pass",
    "llmfd": "llmfd (TCP)",
    "again": "llmfd (TCP) again (A/A: the same, measured again in the round)",
    "unix": "llmfd (Unix socket)",
    "portkey": "Portkey gateway",
}


GX = ("gap_excess_us", "p99")


def errs(d):
    return sum(d.get("errors", {}).values()) if d else 0


def get(label, *path):
    d = R.get(label)
    for p in path:
        if d is None:
            return None
        d = d.get(p)
    return d


def rounds(name, *path, n=ROUNDS):
    """The values of name.rN over the rounds that ran."""
    out = []
    for r in range(1, n + 1):
        v = get("%s.r%d" % (name, r), *path)
        if v is not None:
            out.append(v)
    return out


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(v, nd=0, unit=""):
    if v is None:
        return "-"
    if nd == 0:
        return "%d%s" % (round(v), unit)
    return ("%." + str(nd) + "f%s") % (v, unit)


def spread(xs, nd=0, worst=max):
    """'median (worst)' of a list."""
    if not xs:
        return "-"
    return "%s (%s)" % (fmt(med(xs), nd), fmt(worst(xs), nd))


def met(ok):
    if ok is None:
        return "n/a"
    return "yes" if ok else "**NO**"


def added(name_t, name_ref, key, n=ROUNDS):
    """Per round: target's latency key minus the reference's."""
    out = []
    for r in range(1, n + 1):
        a = get("%s.r%d" % (name_t, r), *key)
        b = get("%s.r%d" % (name_ref, r), *key)
        if a is not None and b is not None:
            out.append(a - b)
    return out


def apart(name_t, name_ref, key, n=ROUNDS):
    """A/A: per round, how far the same thing measured twice landed."""
    return [abs(x) for x in added(name_t, name_ref, key, n)]


def ratio(name_a, name_b, n=ROUNDS):
    """Per round: req/s of a over req/s of b."""
    out = []
    for r in range(1, n + 1):
        a = get("%s.r%d" % (name_a, r), "rps")
        b = get("%s.r%d" % (name_b, r), "rps")
        if a and b:
            out.append(a / b)
    return out


LADDER = [int(c) for c in M.get("ladder", "").split()]


def frontier(t, r, bound):
    """Most req/s of target t in round r with p99 <= bound us (None: no
    bound) and no failure."""
    best = None
    for c in LADDER:
        d = R.get("fr.%s.c%d.r%d" % (t, c, r))
        if d is None or errs(d) or not d.get("ok"):
            continue
        if bound is not None and d["latency_us"]["p99"] > bound:
            continue
        best = max(best or 0, d["rps"])
    return best


def frontiers(t, bound):
    xs = [frontier(t, r, bound) for r in range(1, ROUNDS + 1)]
    return [x if x is not None else 0 for x in xs]


def paired_ratio(xs, ys):
    """Per round: xs[r] / ys[r] (a round where only x has a figure counts
    for x)."""
    out = []
    for x, y in zip(xs, ys):
        if y:
            out.append(x / y)
        elif x:
            out.append(float("inf"))
    return out


def paired_diff(xs, ys):
    """Per round: xs[r] - ys[r]."""
    return [x - y for x, y in zip(xs, ys)]


def out(s=""):
    print(s)


def header():
    out("# llmfd benchmark results")
    out()
    out("- date: %s; commit: `%s`" % (M.get("date"), M.get("commit")))
    out("- machine: %s" % M.get("machine"))
    out("- %s" % M.get("versions"))
    out("- everything on one host over loopback: llmf-bench (1 thread), "
        "the nginx upstream (1 worker), nginx proxy (2 workers), llmf-mock, "
        "Portkey (node, 1 process) and llmfd (2 workers) share the same "
        "CPUs, so throughput is CPU-bound for all of them.")
    out("- load average (1/5/15 min) before the runs: %s; after: %s. The "
        "host may be shared with other work: each measurement ran in %d "
        "interleaved rounds; tables give the median and, in brackets, the "
        "worst round. A target that compares llmfd with nginx is decided "
        "by the median over the rounds of the comparison within each "
        "round (both measured seconds apart)." %
        (M.get("load0"), M.get("load1"), ROUNDS))
    out("- each measurement: %s s after %s s warm-up (ladder steps %s s); "
        "closed loop, keep-alive, one request in flight per connection. "
        "Latencies in microseconds (log-linear histogram, < 0.1 %% bucket "
        "error); \"added\" is the target's figure minus direct's in the "
        "same round." % (M.get("secs"), M.get("warm"), M.get("lsecs")))
    if M.get("portkey_note"):
        out("- Portkey: %s" % M["portkey_note"])
    out()


def targets_table():
    a99 = added("lat.llmfd", "lat.direct", ("latency_us", "p99"))
    n99 = added("lat.nginx", "lat.direct", ("latency_us", "p99"))
    f1 = frontiers("llmfd", 1000)
    fn1 = frontiers("nginx", 1000)
    # like the ratio targets, these compare the two gateways round by
    # round (each round measures both within seconds): the median of the
    # per-round comparisons decides
    f1r = paired_ratio(f1, fn1)
    # A/A: the same llmfd's two frontiers in a round, the larger over the
    # smaller (how far apart two measurements of one thing land)
    fa1 = [max(a, b) / min(a, b) for a, b in
           zip(frontiers("again", 1000), f1) if a and b]
    d99 = paired_diff(a99, n99) if len(a99) == len(n99) else []
    la99 = apart("lat.again", "lat.llmfd", ("latency_us", "p99"))
    r64 = ratio("fr.llmfd.c64", "fr.nginx.c64")
    b1 = ratio("big.llmfd.c1", "big.nginx.c1", BROUNDS)
    b16 = ratio("big.llmfd.c16", "big.nginx.c16", BROUNDS)
    bu1 = ratio("big.unix.c1", "big.nginx.c1", BROUNDS)
    bu16 = ratio("big.unix.c16", "big.nginx.c16", BROUNDS)
    # streams: decided side by side (6b) where the run measured it so,
    # with the one-after-another figures beside
    sp = "sp." if rounds("sp.llmfd", "ok", n=SROUNDS) else "st."
    g99, gn99, gr99, aa99 = (
        added(sp + "llmfd", sp + "direct", GX, SROUNDS),
        added(sp + "nginx", sp + "direct", GX, SROUNDS),
        added(sp + "relay", sp + "direct", GX, SROUNDS),
        apart(sp + "again", sp + "llmfd", GX, SROUNDS))
    sg99 = added("st.llmfd", "st.direct", GX, SROUNDS)
    saa99 = apart("st.again", "st.llmfd", GX, SROUNDS)
    circ = ratio("circ.c64", "healthy.c64", CROUNDS)
    s_ok = get("slow", "ok")
    s_n = int(M.get("nstreams", "0"))
    s_short = get("slow", "frames_short")
    peak = float(M.get("rss_streams_peak", "0"))
    idle = float(M.get("rss_before_streams", "0"))
    after = float(M.get("rss_after_recover", "0"))
    per = float(M.get("per_stream_kb", "0"))
    rows = [
        ("100 KB prompts, 1 conn: >= 0.9x nginx proxy_pass req/s",
         "%sx TCP (Unix %sx)" % (spread(b1, 2, min), spread(bu1, 2, min)),
         med(b1) is not None and med(b1) >= 0.9),
        ("100 KB prompts, 16 conns: >= 0.9x nginx proxy_pass req/s",
         "%sx TCP (Unix %sx)" % (spread(b16, 2, min), spread(bu16, 2, min)),
         med(b16) is not None and med(b16) >= 0.9),
        ("small, 1 conn: added p99 <= nginx proxy_pass's added p99",
         "%s us (nginx %s us); per round, llmfd's minus nginx's: %s us%s" %
         (spread(a99), spread(n99), spread(d99),
          "; the same llmfd measured twice in a round landed %s us apart"
          % spread(la99) if la99 else ""),
         bool(d99) and med(d99) <= 0),
        ("small: frontier at p99 <= 1 ms >= 1.0x nginx proxy_pass's",
         "%s vs %s req/s; per round, llmfd's over nginx's: %sx%s" %
         (spread(f1, 0, min), spread(fn1, 0, min), spread(f1r, 2, min),
          "; the same llmfd measured twice in a round landed %sx apart"
          % spread(fa1, 2) if fa1 else ""),
         bool(f1r) and med(f1r) >= 1.0),
        ("small, 64 conns: req/s >= 1.0x nginx proxy_pass's",
         "%sx" % spread(r64, 2, min),
         med(r64) is not None and med(r64) >= 1.0),
        ("streams: added inter-frame p99 <= 100 us (gap excess over the "
         "upstream's own gap, llmfd's p99 minus direct's%s)" %
         (", all targets side by side" if sp == "sp." else ""),
         "%s us (nginx %s us; a bare relay, one more process hop with "
         "no proxy work, %s us; the same llmfd measured twice in a round "
         "landed %s us apart)%s" % (
             spread(g99), spread(gn99), spread(gr99), spread(aa99),
             "; measured one target after another: %s us, A/A %s us" %
             (spread(sg99), spread(saa99)) if sp == "sp." else ""),
         bool(g99) and med(g99) <= 100),
        ("%d streams (500 ms apart): none lost, <= 100 MB peak RSS" % s_n,
         "%s ok, %s short of frames, %.1f MB peak" %
         (s_ok, s_short, peak / 1024),
         s_ok == s_n and s_short == 0 and peak <= 100 * 1024),
        ("RSS %s s after the streams within 20 %% of before" %
         M.get("recover_s"),
         "%.1f MB vs %.1f MB (%.2fx)" %
         (after / 1024, idle / 1024, after / idle if idle else 0),
         idle > 0 and after <= 1.2 * idle),
        ("memory per stream <= 8 kB", "%.1f kB" % per, per <= 8),
        ("open circuit within 5 %% of the healthy path (64 conns, %d "
         "pairs one after the other)" % CROUNDS,
         "%sx (circuit: %s)" % (spread(circ, 2, min), M.get("circuit")),
         med(circ) is not None and med(circ) >= 0.95),
    ]
    out("## Targets")
    out()
    out("| target | measured: median (worst round) | met |")
    out("|---|---|---|")
    for name, value, ok in rows:
        out("| %s | %s | %s |" % (name, value, met(ok)))
    out()


def small_table():
    out("## Small requests at 1 connection")
    out()
    out("| target | req/s | p50 | p99 | added p50 | added p99 | errors |")
    out("|---|---|---|---|---|---|---|")
    # "again" (A/A) only where this run measured it
    for t in TARGETS + (["again"] if rounds("lat.again", "rps") else []):
        n = "lat." + t
        a50 = added(n, "lat.direct", ("latency_us", "p50"))
        a99 = added(n, "lat.direct", ("latency_us", "p99"))
        out("| %s | %s | %s | %s | %s | %s | %d |" % (
            NAMES.get(t, t), spread(rounds(n, "rps"), 0, min),
            spread(rounds(n, "latency_us", "p50")),
            spread(rounds(n, "latency_us", "p99")),
            "-" if t == "direct" else spread(a50),
            "-" if t == "direct" else spread(a99),
            sum(errs(R.get("%s.r%d" % (n, r))) for r in
                range(1, ROUNDS + 1))))
    out()


def frontier_table():
    ft = TARGETS + (["again"] if rounds("fr.again.c1", "rps") else [])
    rc = int(M.get("reconnect_ms", "0") or 0)
    out("## Throughput frontier (small requests, concurrency ladder %s)" %
        " ".join(str(c) for c in LADDER))
    out()
    out("Most req/s of any ladder step with no failure and p99 within the "
        "bound; median of the rounds (worst round).%s" % (
            " Each ladder connection lives %d ms x [0.5, 1.5) and then "
            "reconnects: which of a server's two workers the connections "
            "of a step land on moves its p99 more than anything else on "
            "this host (16 on one worker: ~0.9 ms at 16 connections; 15 "
            "and 1: ~2.5 ms; nginx and llmfd alike), and a step that kept "
            "the split it drew first would be decided by that one draw." %
            rc if rc else ""))
    out()
    out("| target | p99 <= 1 ms | p99 <= 5 ms | unbounded |")
    out("|---|---|---|---|")
    for t in ft:
        out("| %s | %s | %s | %s |" % (
            NAMES.get(t, t), spread(frontiers(t, 1000), 0, min),
            spread(frontiers(t, 5000), 0, min),
            spread(frontiers(t, None), 0, min)))
    out()
    out("Ladder (median of the rounds): req/s / p99 us")
    out()
    out("| conns | " + " | ".join(NAMES.get(t, t) for t in ft) + " |")
    out("|---|" + "---|" * len(ft))
    for c in LADDER:
        cells = []
        for t in ft:
            n = "fr.%s.c%d" % (t, c)
            rps = med(rounds(n, "rps"))
            p99 = med(rounds(n, "latency_us", "p99"))
            e = sum(errs(R.get("%s.r%d" % (n, r))) for r in
                    range(1, ROUNDS + 1))
            cells.append("%s / %s%s" % (fmt(rps), fmt(p99),
                                        " (%d errors)" % e if e else ""))
        out("| %d | %s |" % (c, " | ".join(cells)))
    out()


def big_table():
    out("## 100 KB prompts")
    out()
    out("In %d rounds (at 1 connection a round's ratio to nginx swings by "
        "several per cent on this host)." % BROUNDS)
    out()
    out("| conns | target | req/s | p50 | p99 | errors |")
    out("|---|---|---|---|---|---|")
    for c in (1, 16):
        for t in ("direct", "nginx", "llmfd", "unix"):
            n = "big.%s.c%d" % (t, c)
            out("| %d | %s | %s | %s | %s | %d |" % (
                c, NAMES.get(t, t),
                spread(rounds(n, "rps", n=BROUNDS), 0, min),
                spread(rounds(n, "latency_us", "p50", n=BROUNDS)),
                spread(rounds(n, "latency_us", "p99", n=BROUNDS)),
                sum(errs(R.get("%s.r%d" % (n, r))) for r in
                    range(1, BROUNDS + 1))))
    out()


def stream_tables():
    out("## Streams: 64 frames 20 ms apart (llmf-mock), 16 at once")
    out()
    out("The mock stamps each frame with its send time (`llmf_sent_us`, "
        "CLOCK_MONOTONIC; llmf-mock --stamp 1), so the bench measures each "
        "frame's delay from the upstream's send to its arrival, and the "
        "**gap excess**: how much longer a gap between two frames was at "
        "the client than at the upstream (negative counted as 0). That "
        "takes the upstream's own pacing jitter (the raw gap p99 below is "
        "20 ms plus milliseconds of the mock's timer lateness) out of the "
        "comparison. Both count from the frame after the first content "
        "on: llmfd holds the role-only first frame back until content "
        "arrives, so that it can still fail over (TTFT covers that). The "
        "bare relay (llmf-relay: a blocking read and write per chunk, a "
        "thread per direction) is one more process hop with no proxy work "
        "at all: what it adds is the host's scheduling of that hop. "
        "Streams ran in %d rounds (the gap p99 is the noisiest figure "
        "here), their order reversed every other round." % SROUNDS)
    out()
    stream_rows("st.", M.get("stream_targets", "direct nginx llmfd").split())
    side = M.get("side_targets", "").split()
    if side:
        out("### The same, side by side")
        out()
        out("Every target at once, 4 streams each (%d in all), in one "
            "llmf-bench event loop, the targets' order rotated each round, "
            "%d rounds. A host stall during a round falls on all of them "
            "alike, and the comparison within the round (\"added\", and "
            "the A/A distance) cancels it; measured one after another, "
            "each target meets stalls of its own. The stream target is "
            "decided here." % (4 * len(side), SROUNDS))
        out()
        stream_rows("sp.", side)


def stream_rows(p, targets):
    """The stream table of the runs labelled p + target + .rN."""
    out("| target | TTFT p50 | TTFT p99 | gap p50 | gap p99 | frame delay "
        "p50 / p99 | gap excess p99 | added TTFT p50 / p99 | added frame "
        "delay p50 / p99 | added gap excess p99 | short / stalled | "
        "errors |")
    out("|---|---|---|---|---|---|---|---|---|---|---|---|")
    d = p + "direct"
    for t in targets:
        n = p + t
        e = sum(errs(R.get("%s.r%d" % (n, r))) for r in range(1, SROUNDS + 1))
        short = sum(rounds(n, "frames_short", n=SROUNDS))
        stall = sum(rounds(n, "stalled", n=SROUNDS))
        if t == "direct":
            at = ad = ag = "-"
        else:
            at = "%s / %s" % (
                spread(added(n, d, ("ttft_us", "p50"), SROUNDS)),
                spread(added(n, d, ("ttft_us", "p99"), SROUNDS)))
            ad = "%s / %s" % (
                spread(added(n, d, ("frame_delay_us", "p50"), SROUNDS)),
                spread(added(n, d, ("frame_delay_us", "p99"), SROUNDS)))
            ag = spread(added(n, d, ("gap_excess_us", "p99"), SROUNDS))
        out("| %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s | "
            "%d / %d | %d |" % (
                NAMES.get(t, t), spread(rounds(n, "ttft_us", "p50", n=SROUNDS)),
                spread(rounds(n, "ttft_us", "p99", n=SROUNDS)),
                spread(rounds(n, "gap_us", "p50", n=SROUNDS)),
                spread(rounds(n, "gap_us", "p99", n=SROUNDS)),
                spread(rounds(n, "frame_delay_us", "p50", n=SROUNDS)),
                spread(rounds(n, "frame_delay_us", "p99", n=SROUNDS)),
                spread(rounds(n, "gap_excess_us", "p99", n=SROUNDS)),
                at, ad, ag, short, stall, e))
    out()


def stream_ladder_table():
    out("### Most concurrent streams with no frame lost and no gap over "
        "200 ms")
    out()
    out("Each step opens N streams at once (64 frames 20 ms apart); a step "
        "passes when every stream completes with all its frames and no gap "
        "between frames exceeds 200 ms. A target stops at its first failed "
        "step.")
    out()
    out("| target | most | steps: N ok / short / stalled / errors, gap p99, "
        "max gap (ms) |")
    out("|---|---|---|")
    for t in M.get("ladder_targets", "direct nginx llmfd").split():
        steps, best = [], 0
        for n in [int(x) for x in M.get("stream_ladder", "").split()]:
            d = R.get("sl.%s.n%d" % (t, n))
            if d is None:
                continue
            ok = (d.get("ok") == n and not errs(d) and
                  not d.get("frames_short") and not d.get("stalled"))
            if ok:
                best = max(best, n)
            kinds = ", ".join("%s %d" % (k, v) for k, v in
                              sorted(d.get("errors", {}).items()) if v)
            steps.append("%d: %d / %d / %d / %d%s, %s, %s" % (
                n, d.get("ok", 0), d.get("frames_short", 0),
                d.get("stalled", 0), errs(d),
                " (%s)" % kinds if kinds else "",
                fmt(d["gap_us"]["p99"] / 1000, 1),
                fmt(d["gap_us"]["max"] / 1000, 1)))
        out("| %s | %s | %s |" % (NAMES.get(t, t), best or "none",
                                   "<br>".join(steps)))
    out()


def memory_table():
    n = int(M.get("nstreams", "0"))
    d = R.get("slow", {})
    out("## %d streams at once (20 frames 500 ms apart) and memory" % n)
    out()
    out("%s streams ok, %s short of frames, %s errors; TTFT p50 %s us, p99 "
        "%s us (the %d connects ramp up during the first second)." % (
            d.get("ok"), d.get("frames_short"), errs(d),
            fmt(get("slow", "ttft_us", "p50")),
            fmt(get("slow", "ttft_us", "p99")), n))
    out()
    out("| llmfd RSS (master + workers), MB | total | workers |")
    out("|---|---|---|")
    for key, name in (("idle", "idle, after start"),
                      ("load_peak", "under a fixed load (%s req/s, peak)" %
                       M.get("load_rate")),
                      ("before_streams", "before the streams"),
                      ("streams_peak", "%d streams (peak)" % n),
                      ("after_streams", "right after the streams"),
                      ("after_recover", "%s s after the streams" %
                       M.get("recover_s"))):
        tot = float(M.get("rss_" + key, "0"))
        w = float(M.get("rssw_" + key, "0"))
        out("| %s | %.1f | %.1f |" % (name, tot / 1024, w / 1024))
    out()
    out("Memory per stream: %s kB ((peak - before) / streams; "
        "bench/streams-mem.sh measures it alone)." % M.get("per_stream_kb"))
    fds = [int(x) for x in M.get("fds_streams_peak", "").split()]
    if fds and sum(fds):
        out()
        out("The accept split of the %d connects (each worker accepts one "
            "connection per wake-up): at the peak the workers held %s "
            "descriptors (%s; a stream holds a client and an upstream "
            "socket)." % (n, " and ".join(str(x) for x in fds),
                          " / ".join("%.0f %%" % (100.0 * x / sum(fds))
                                     for x in fds)))
    out()


def misc_tables():
    out("## Failure paths (Unix socket, 64 conns; healthy and open circuit "
        "in %d pairs one after the other, the order alternating)" %
        CROUNDS)
    out()
    out("| run | req/s | p50 | p99 | errors |")
    out("|---|---|---|---|---|")
    for n, name in (("healthy.c64", "healthy group"),
                    ("circ.c64", "first deployment dead, circuit %s" %
                     M.get("circuit"))):
        out("| %s | %s | %s | %s | %d |" % (
            name, spread(rounds(n, "rps", n=CROUNDS), 0, min),
            spread(rounds(n, "latency_us", "p50", n=CROUNDS)),
            spread(rounds(n, "latency_us", "p99", n=CROUNDS)),
            sum(errs(R.get("%s.r%d" % (n, r))) for r in
                range(1, CROUNDS + 1))))
    for n, name in (("mockflaky", "direct to a mock failing 20 % (503)"),
                    ("flaky", "llmfd, upstream failing 20 % (503)")):
        d = R.get(n)
        if d:
            out("| %s | %s | %s | %s | %d |" % (
                name, fmt(d["rps"]), fmt(d["latency_us"]["p50"]),
                fmt(d["latency_us"]["p99"]), errs(d)))
    out()
    if M.get("wrk"):
        out("wrk cross-check (TCP, 2 threads, 64 conns, req/s):%s." %
            M["wrk"])
        out()
    for p, what in (("small", "64 conns, small body"),
                    ("big", "8 conns, 100 KB body")):
        f = os.path.join(D, "perf-%s.txt" % p)
        if os.path.exists(f) and os.path.getsize(f):
            out("## Profile of the workers: %s (cpu-clock, self)" % what)
            out()
            out("```")
            with open(f) as fh:
                out(fh.read().rstrip())
            out("```")
            out()


header()
targets_table()
small_table()
frontier_table()
big_table()
stream_tables()
stream_ladder_table()
memory_table()
misc_tables()
