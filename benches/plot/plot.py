#!/usr/bin/env python3
"""Charts of the benchmark results, as hand-written SVG (standard library only).

    python3 benches/plot/plot.py [--results DIR] [--out DIR]

Reads benches/results/{fanout,idle,http,auth}.jsonl and writes into benches/plot/:

    fanout-deliveries.svg   fan-out deliveries/s per target and scenario (latest run, log scale)
    fanout-latency.svg      publish -> receive latency p50 / p99 per target and scenario (latest run, log scale)
    idle-memory.svg         idle bytes per WebSocket connection per target (latest run)
    http-rps.svg            HTTP req/s: direct, nginx, channelgate (latest run), p50 / p99 in the labels
    auth-connects.svg       WebSocket connects/s with auth by the app, per target (latest run, log scale)
    auth-latency.svg        connect time p50 / p99 with auth, per target (latest run, log scale)

"Latest run" is the newest run_id in the file, or the one given with --run BENCH=RUN_ID. A target that the latest run did not
measure (e.g. an idle run that re-measured channelgate alone) is taken from its newest
earlier run with the same N and marked with that run id, so the chart still compares
the peers; the subtitle says so. A results file that is missing or empty is skipped.
"""
import argparse
import json
import math
import os
import sys
from xml.sax.saxutils import escape

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))

FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"
# channelgate targets in blue, peers in warm/neutral colours; series colours for p50/p99.
TARGET_COLOURS = {
    "channelgate": "#1f6fb4", "channelgate-memory": "#1f6fb4", "channelgate-amqp": "#5b9bd5",
    "channelgate-auth": "#1f6fb4", "channelgate-noauth": "#5b9bd5",
    "daphne": "#d9822b", "daphne-auth": "#d9822b", "daphne-noauth": "#f0b27a",
    "nchan": "#4d9e5a", "nginx": "#4d9e5a", "pushpin": "#8e5ea2", "direct": "#8c8c8c", "app-ws-auth": "#8c8c8c",
}
SERIES_COLOURS = ["#1f6fb4", "#d9822b", "#4d9e5a", "#8c8c8c"]
SERIES_COLOURS_LIGHT = {"#1f6fb4": "#9dc3e6", "#d9822b": "#f5cba7", "#4d9e5a": "#a9d18e", "#8e5ea2": "#cdb5dc", "#8c8c8c": "#cfcfcf"}


# ------------------------------------------------------------------ data ---

def read_jsonl(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue
    except OSError:
        return []
    return out


# bench name -> run_id to draw instead of the newest (--run BENCH=RUN_ID)
PINNED = {}


def latest_with_fill(recs, key):
    """Records of the newest run_id (or the run pinned for this bench with --run), plus,
    for each (key) that run lacks, the newest earlier record with that key.
    key(rec) -> hashable (target, scenario, n ...).
    Returns (run_id, [(rec, filled_from_older_run)])."""
    if not recs:
        return None, []
    latest = max(r.get("run_id", "") for r in recs)
    pinned = PINNED.get(recs[0].get("bench"))
    if pinned:
        if not any(r.get("run_id") == pinned for r in recs):
            raise ValueError(f"--run {recs[0].get('bench')}={pinned}: no such run in the results")
        latest = pinned
        recs = [r for r in recs if r.get("run_id", "") <= pinned]
    chosen = {}
    for r in sorted(recs, key=lambda r: (r.get("run_id", ""), r.get("timestamp", ""))):
        chosen[key(r)] = r  # newest wins
    cur = [r for r in recs if r.get("run_id") == latest]
    cur_keys = {key(r) for r in cur}
    ns = {r.get("n") for r in cur}
    out = [(chosen[key(r)], False) for r in cur]
    seen = set()
    for k, r in chosen.items():
        if k in cur_keys or k in seen:
            continue
        if r.get("n") not in ns:  # only fill with the same N
            continue
        seen.add(k)
        out.append((r, True))
    # dedupe (a run may have two lines for one key: keep the newest)
    uniq, done = [], set()
    for r, filled in out:
        if key(r) in done:
            continue
        done.add(key(r))
        uniq.append((r, filled))
    return latest, uniq


def machine_line(rec):
    m = rec.get("machine") or {}
    bits = []
    if m.get("nproc"):
        bits.append(f"{m['nproc']} CPUs")
    if m.get("cpu"):
        bits.append(m["cpu"])
    v = (rec.get("versions") or {}).get("channelgate")
    if v:
        bits.append(f"channelgate {v}")
    return ", ".join(bits)


# ------------------------------------------------------------- formatting ---

def fmt_num(v):
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_ms(v):
    if v is None:
        return "-"
    if v >= 10000:
        return f"{v / 1000:,.1f} s"
    return f"{fmt_num(v)} ms"


def fmt_bytes(v):
    if v is None:
        return "-"
    return f"{v:,.0f} B ({v / 1024:.1f} KiB)"


def tick_label(v):
    if v >= 1e6:
        s = f"{v / 1e6:g}M"
    elif v >= 1e3:
        s = f"{v / 1e3:g}k"
    else:
        s = f"{v:g}"
    return s


def nice_linear_ticks(vmax, target=6):
    if vmax <= 0:
        return [0, 1]
    raw = vmax / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    ticks, t = [], 0.0
    while t < vmax + step * 0.999:
        ticks.append(round(t, 10))
        t += step
    return ticks


def text_width(s, size=12):
    """Rough width of s in px for DejaVu Sans (wide; for layout only, errs on the wide side)."""
    def w(c):
        if c in "il.,:;|!'":
            return 0.30
        if c == " ":
            return 0.34
        if c in "mwMW":
            return 0.92
        if c.isupper():
            return 0.72
        if c in "ft()[]/-":
            return 0.40
        return 0.63
    return sum(size * w(c) for c in s)


def ms_tick(v):
    return f"{v / 1000:g} s" if v >= 1000 else f"{v:g} ms"


def busy_notes(pairs):
    """Warnings for records measured while the machine was busy with other load."""
    out = []
    for r, _ in pairs:
        s = r.get("summary") or {}
        b = s.get("busy_before_pct", s.get("busy_before_pct_max"))
        if b is None and r.get("rounds"):
            b = max((x.get("busy_before_pct") or 0) for x in r["rounds"] if isinstance(x, dict))
        if b is not None and b > 25:
            out.append(f"{r.get('target')} ({r.get('run_id')}): the machine was {b:g}% busy before the measurement")
    return [("WARNING, other load: " + "; ".join(sorted(set(out))))[:230]] if out else []


# -------------------------------------------------------------------- SVG ---

def hbar_chart(path, title, subtitle, groups, series, log=False, value_fmt=fmt_num, tick_fmt=None,
               xlabel="", notes=(), colour_by_target=True):
    """Horizontal bars. groups: list of dicts {label, values: [v per series], tags: [str per
    series] (value label override), target (for the colour), dim (bool: from an older run)}.
    series: names (a legend is drawn when there is more than one)."""
    size = 12
    bar_h, bar_gap, group_gap = 18, 3, 12
    label_w = max([text_width(g["label"], size) for g in groups] + [60]) + 24
    left = max(150, min(360, label_w))
    values = [v for g in groups for v in g["values"] if v is not None and v > 0]
    tags = [g.get("tags", [None] * len(series))[i] or value_fmt(v) for g in groups for i, v in enumerate(g["values"])]
    right = max(90, min(300, max(text_width(t, 11) for t in tags) + 24)) if tags else 90
    plot_w = 470
    width = int(left + plot_w + right)
    width = int(max([width, text_width(title, 16) * 1.05 + 32]
                    + [text_width(line, 11.5) + 32 for line in subtitle.split("\n")]
                    + [text_width(n, 10.5) + 32 for n in notes]))
    top = 58 + (len(subtitle.split("\n")) - 1) * 15 + (22 if len(series) > 1 else 0)
    n_rows = sum(len(series) for _ in groups)
    plot_h = n_rows * (bar_h + bar_gap) + len(groups) * group_gap
    bottom = 42 + 15 * len(notes)
    height = int(top + plot_h + bottom)

    if not values:
        values = [1]
    if log:
        lo = 10 ** math.floor(math.log10(min(values)))
        hi = 10 ** math.ceil(math.log10(max(values)))
        if hi <= lo:
            hi = lo * 10

        def x(v):
            v = max(v, lo)
            return left + plot_w * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
        ticks = [10 ** e for e in range(int(round(math.log10(lo))), int(round(math.log10(hi))) + 1)]
        minor = [m * t for t in ticks[:-1] for m in range(2, 10)]
    else:
        ticks = nice_linear_ticks(max(values))
        hi = ticks[-1]

        def x(v):
            return left + plot_w * v / hi
        minor = []

    o = []
    o.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="{FONT}" font-size="{size}">')
    o.append(f'<rect width="{width}" height="{height}" fill="#ffffff"/>')
    o.append(f'<text x="16" y="24" font-size="16" font-weight="bold" fill="#222">{escape(title)}</text>')
    for i, line in enumerate(subtitle.split("\n")):
        o.append(f'<text x="16" y="{43 + 15 * i}" font-size="11.5" fill="#555">{escape(line)}</text>')
    if len(series) > 1:
        lx = left
        ly = top - 16
        for i, s in enumerate(series):
            c = SERIES_COLOURS[i % len(SERIES_COLOURS)]
            o.append(f'<rect x="{lx:.1f}" y="{ly - 10}" width="12" height="12" fill="{c}"/>')
            o.append(f'<text x="{lx + 17:.1f}" y="{ly}" fill="#333">{escape(s)}</text>')
            lx += 30 + text_width(s, size)
    # grid
    for t in minor:
        xx = x(t)
        o.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + plot_h}" stroke="#f0f0f0"/>')
    for t in ticks:
        xx = x(t)
        o.append(f'<line x1="{xx:.1f}" y1="{top}" x2="{xx:.1f}" y2="{top + plot_h}" stroke="#dddddd"/>')
        o.append(f'<text x="{xx:.1f}" y="{top + plot_h + 15}" text-anchor="middle" font-size="11" fill="#555">'
                 f'{escape(tick_fmt(t) if tick_fmt else tick_label(t))}</text>')
    o.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>')
    if xlabel:
        o.append(f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h + 32}" text-anchor="middle" font-size="11.5" '
                 f'fill="#333">{escape(xlabel)}</text>')
    # bars
    y = top + group_gap / 2
    for g in groups:
        gh = len(series) * (bar_h + bar_gap)
        o.append(f'<text x="{left - 8}" y="{y + gh / 2 + 4:.1f}" text-anchor="end" fill="{"#777" if g.get("dim") else "#222"}">'
                 f'{escape(g["label"])}</text>')
        for i, v in enumerate(g["values"]):
            if len(series) > 1 or not colour_by_target:
                c = SERIES_COLOURS[i % len(SERIES_COLOURS)]
            else:
                c = TARGET_COLOURS.get(g.get("target", ""), "#7f7f7f")
            if g.get("dim"):
                c = SERIES_COLOURS_LIGHT.get(c, c)
            tag = (g.get("tags") or [None] * len(series))[i] or value_fmt(v)
            if v is None or v <= 0:
                o.append(f'<text x="{left + 4}" y="{y + bar_h - 5}" font-size="11" fill="#999">{escape(tag if v is not None else "no data")}</text>')
            else:
                w = max(1.0, x(v) - left)
                o.append(f'<rect x="{left}" y="{y:.1f}" width="{w:.1f}" height="{bar_h}" fill="{c}"><title>'
                         f'{escape(g["label"])} {escape(series[i])}: {escape(tag)}</title></rect>')
                o.append(f'<text x="{left + w + 5:.1f}" y="{y + bar_h - 5}" font-size="11" fill="#222">{escape(tag)}</text>')
            y += bar_h + bar_gap
        y += group_gap
    for i, n in enumerate(notes):
        o.append(f'<text x="16" y="{height - 12 - 15 * (len(notes) - 1 - i)}" font-size="10.5" fill="#666">{escape(n)}</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")
    return path


# ----------------------------------------------------------------- charts ---

FANOUT_ORDER = ["channelgate-memory", "channelgate-amqp", "channelgate-tls", "channelgate-deflate", "daphne",
                "nchan", "nchan-tls", "nchan-deflate", "pushpin"]
SCEN_ORDER = ["burst", "rate"]


def order_key(order):
    return lambda t: (order.index(t) if t in order else len(order), t)


def filled_note(pairs):
    olds = sorted({r["run_id"] for r, filled in pairs if filled})
    return ("bars in light colours come from an earlier run (" + ", ".join(olds) + "): the latest run did not measure that target") if olds else ""


def fanout_charts(results, out):
    recs = [r for r in read_jsonl(os.path.join(results, "fanout.jsonl")) if r.get("bench") == "fanout"]
    run_id, pairs = latest_with_fill(recs, lambda r: (r.get("target"), r.get("scenario"), r.get("n")))
    if not pairs:
        return []
    any_rec = pairs[0][0]
    ns = sorted({r["n"] for r, _ in pairs})
    msgs = any_rec.get("messages")
    size = (any_rec.get("params") or {}).get("size", "250")
    rate = next((r.get("rate") for r, _ in pairs if r.get("scenario") == "rate"), None)
    # Runs with cases (benches/fanout/run.sh --case, --steady) have a rate and M per N.
    cases = sorted({(r["n"], r.get("rate"), r.get("messages")) for r, _ in pairs if r.get("scenario") == "rate"})
    targets = sorted({r["target"] for r, _ in pairs}, key=order_key(FANOUT_ORDER))
    by = {(r["target"], r["scenario"], r["n"]): (r, filled) for r, filled in pairs}
    note = filled_note(pairs)
    payload = "AWX job events" if any_rec.get("payload") == "awx" else f"messages of {size} B"
    if len(cases) > 1:
        sub = (f"run {run_id}, one group of N clients, {payload}; cases N x rate x messages: "
               + ", ".join(f"{n} x {r:g}/s x {m}" for n, r, m in cases)
               + f"; burst = the same messages as fast as possible\n{machine_line(any_rec)}")
    else:
        sub = (f"run {run_id}, N = {', '.join(map(str, ns))} clients in one group, {msgs} {payload}; "
               f"burst = as fast as possible, rate = {rate:g} msg/s\n{machine_line(any_rec)}")
    rate_label = f"rate {rate:g}/s" if len(cases) <= 1 and rate is not None else "rate"
    written = []

    def label(t, n):
        return t if len(ns) == 1 else f"{t} (N={n})"
    # (a) deliveries/s
    groups = []
    for n in ns:
        for t in targets:
            vals, tags, dim = [], [], False
            for sc in SCEN_ORDER:
                r, filled = by.get((t, sc, n), (None, False))
                s = (r or {}).get("summary", {})
                v = s.get("deliveries_per_s")
                vals.append(v)
                lost = s.get("lost") or 0
                tags.append(None if v is None else fmt_num(v) + (f" (lost {lost:,})" if lost else ""))
                dim = dim or filled
            groups.append({"label": label(t, n), "values": vals, "tags": tags, "target": t, "dim": dim})
    written.append(hbar_chart(
        os.path.join(out, "fanout-deliveries.svg"), "WebSocket fan-out: deliveries per second (more is better)",
        sub, groups, ["burst", rate_label], log=True, xlabel="deliveries/s (log scale)",
        notes=[n for n in [note, *busy_notes(pairs), "source: benches/results/fanout.jsonl (benches/fanout/run.sh); in the rate scenario the offered load is N x rate"] if n]))
    # (b) latency p50 / p99 per target and scenario
    groups = []
    for n in ns:
        for t in targets:
            for sc in SCEN_ORDER:
                r, filled = by.get((t, sc, n), (None, False))
                if not r:
                    continue
                s = r.get("summary", {})
                groups.append({"label": f"{label(t, n)} · {sc}", "values": [s.get("p50_ms"), s.get("p99_ms")],
                               "target": t, "dim": filled})
    written.append(hbar_chart(
        os.path.join(out, "fanout-latency.svg"), "WebSocket fan-out: publish → receive latency (less is better)",
        sub, groups, ["p50", "p99"], log=True, value_fmt=fmt_ms, tick_fmt=ms_tick, xlabel="time (log scale)",
        notes=[n for n in [note, *busy_notes(pairs), "source: benches/results/fanout.jsonl; latency = publisher's timestamp to the client's read, same clock"] if n]))
    return written


def idle_chart(results, out):
    recs = [r for r in read_jsonl(os.path.join(results, "idle.jsonl"))
            if r.get("bench") == "idle" and (r.get("summary") or {}).get("bytes_per_connection")]
    run_id, pairs = latest_with_fill(recs, lambda r: (r.get("target"), r.get("n")))
    if not pairs:
        return []
    order = order_key(["channelgate", "daphne", "nchan", "pushpin"])
    pairs.sort(key=lambda p: order(p[0]["target"]))
    ns = sorted({r["n"] for r, _ in pairs})
    groups = []
    for r, filled in pairs:
        s = r["summary"]
        lab = r["target"] + (f" (N={r['n']})" if len(ns) > 1 else "")
        tag = fmt_bytes(s["bytes_per_connection"]) + (f" · run {r['run_id']}" if filled else "")
        groups.append({"label": lab, "values": [s["bytes_per_connection"]], "tags": [tag], "target": r["target"], "dim": filled})
    any_rec = next(r for r, f in pairs if not f)
    sub = (f"run {run_id}, N = {', '.join(map(str, ns))} idle connections; server RSS growth / N\n{machine_line(any_rec)}")
    return [hbar_chart(
        os.path.join(out, "idle-memory.svg"), "Idle memory per WebSocket connection (less is better)",
        sub, groups, ["bytes per connection"], value_fmt=fmt_bytes, xlabel="bytes per connection",
        notes=[n for n in [filled_note(pairs), *busy_notes(pairs), "source: benches/results/idle.jsonl (benches/idle/run.sh)"] if n])]


def http_chart(results, out):
    recs = [r for r in read_jsonl(os.path.join(results, "http.jsonl")) if r.get("bench") == "http"]
    run_id, pairs = latest_with_fill(recs, lambda r: (r.get("target"),))
    pairs = [(r, f) for r, f in pairs if r.get("run_id") == run_id]  # the three targets always run together
    if not pairs:
        return []
    pairs.sort(key=lambda p: order_key(["direct", "nginx", "channelgate"])(p[0]["target"]))
    groups = []
    for r, _ in pairs:
        lab = r["target"]
        if lab == "nginx":
            ng = (r.get("versions") or {}).get("nginx", "")
            lab = "nginx " + ng.split("/")[-1] if "/" in ng else "nginx"
        tag = f"{fmt_num(r.get('rps'))} req/s · p50 {fmt_ms(r.get('p50_ms'))}, p99 {fmt_ms(r.get('p99_ms'))}"
        groups.append({"label": lab, "values": [r.get("rps")], "tags": [tag], "target": r["target"]})
    p = pairs[0][0].get("params") or {}
    rounds = len(pairs[0][0].get("rounds") or [])
    sub = (f"run {run_id}: wrk -t{p.get('threads', '?')} -c{p.get('connections', '?')} -d{p.get('duration', '?')}, "
           f"{pairs[0][0].get('stat', 'median')} of {rounds} rounds, {p.get('body_bytes', '?')}-byte answers from an nginx upstream\n"
           f"{machine_line(pairs[0][0])}")
    return [hbar_chart(
        os.path.join(out, "http-rps.svg"), "HTTP proxying: requests per second (more is better)", sub, groups,
        ["req/s"], xlabel="requests/s",
        notes=[*busy_notes(pairs), "direct = wrk against the upstream itself (the ceiling); source: benches/results/http.jsonl (benches/http/run.sh)"])]


AUTH_ORDER = ["channelgate-auth", "daphne-auth", "channelgate-noauth", "daphne-noauth", "app-ws-auth"]


def auth_charts(results, out):
    recs = [r for r in read_jsonl(os.path.join(results, "auth.jsonl")) if r.get("bench") == "auth"]
    run_id, pairs = latest_with_fill(recs, lambda r: (r.get("target"), r.get("n")))
    if not pairs:
        return []
    pairs.sort(key=lambda p: order_key(AUTH_ORDER)(p[0]["target"]))
    any_rec = next(r for r, f in pairs if not f)
    sub = (f"run {run_id}, N = {any_rec.get('n')} connects with a Django session cookie, {any_rec.get('concurrency')} in flight, "
           f"{any_rec.get('stat', '')}\n{machine_line(any_rec)}")
    note = filled_note(pairs)
    groups = []
    for r, filled in pairs:
        s = r["summary"]
        unit = s.get("unit", "connects/s")
        lab = r["target"] + (" (GET /ws-auth/, wrk)" if r["target"] == "app-ws-auth" else "")
        fails = s.get("failed") or 0
        tag = f"{fmt_num(s.get('per_s'))} {unit}" + (f" ({fails} failed)" if fails else "")
        groups.append({"label": lab, "values": [s.get("per_s")], "tags": [tag], "target": r["target"], "dim": filled})
    written = [hbar_chart(
        os.path.join(out, "auth-connects.svg"), "WebSocket connects per second with auth by the app (more is better)",
        sub, groups, ["rate"], log=True, xlabel="connects/s (log scale)",
        notes=[n for n in [note, *busy_notes(pairs), "*-auth: session cookie checked per connect (channelgate: GET /ws-auth/ on gunicorn; daphne: AuthMiddlewareStack);",
                           "*-noauth: the same route without auth; app-ws-auth: gunicorn's /ws-auth/ alone (req/s). Source: benches/results/auth.jsonl"] if n])]
    groups = []
    for r, filled in pairs:
        s = r["summary"]
        lab = r["target"] + (" (request time)" if r["target"] == "app-ws-auth" else "")
        groups.append({"label": lab, "values": [s.get("p50_ms"), s.get("p99_ms")], "target": r["target"], "dim": filled})
    written.append(hbar_chart(
        os.path.join(out, "auth-latency.svg"), "WebSocket connect time with auth by the app (less is better)",
        sub, groups, ["p50", "p99"], log=True, value_fmt=fmt_ms, tick_fmt=ms_tick, xlabel="time (log scale)",
        notes=[n for n in [note, *busy_notes(pairs), "connect time = TCP connect + handshake (+ auth) until the 101, per client; source: benches/results/auth.jsonl"] if n]))
    return written

STATIC_CASES = ["2k", "100k", "10m", "gzip-json"]


def static_chart(results, out):
    """channelgate and nginx side by side per case of the newest run of benches/static/run.sh
    (its records carry `time`, the run's start, rather than a run_id)."""
    recs = [r for r in read_jsonl(os.path.join(results, "static.jsonl")) if r.get("bench") == "static"]
    if not recs:
        return []
    run = PINNED.get("static") or max(str(r.get("time", "")) for r in recs)
    cur = [r for r in recs if str(r.get("time", "")) == str(run)]
    if not cur:
        raise ValueError(f"--run static={run}: no such run in the results")
    by = {(r.get("case"), r.get("target")): r for r in cur}
    groups = []
    for case in sorted({r.get("case") for r in cur}, key=order_key(STATIC_CASES)):
        for target in ("nginx", "channelgate"):
            r = by.get((case, target))
            if not r:
                continue
            tag = f"{fmt_num(r.get('rps'))} req/s · {fmt_num(r.get('mib_s'))} MiB/s · p99 {fmt_ms(r.get('p99_ms'))}"
            groups.append({"label": f"{case}: {target}", "values": [r.get("rps")], "tags": [tag], "target": target})
    r0 = cur[0]
    sub = (f"run {run}: wrk, {r0.get('connections', '?')} connections, {r0.get('duration', '?')} x {r0.get('rounds', '?')} round(s); "
           "2k/100k/10m = a file of that size, gzip-json = a 100 KiB JSON answer from the app, gzipped")
    return [hbar_chart(
        os.path.join(out, "static-rps.svg"), "Static files and gzip: requests per second (more is better)", sub, groups,
        ["req/s"], log=True, xlabel="requests/s (log scale)",
        notes=["source: benches/results/static.jsonl (benches/static/run.sh)"])]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=os.path.join(REPO, "benches", "results"))
    ap.add_argument("--out", default=HERE)
    ap.add_argument("--run", action="append", default=[], metavar="BENCH=RUN_ID",
                    help="draw this run of BENCH (fanout, idle, http, auth, static) instead of the newest")
    a = ap.parse_args(argv)
    for pin in a.run:
        bench, sep, run_id = pin.partition("=")
        if not sep or bench not in ("fanout", "idle", "http", "auth", "static") or not run_id:
            ap.error(f"--run {pin!r}: expected BENCH=RUN_ID with BENCH one of fanout, idle, http, auth, static")
        PINNED[bench] = run_id
    os.makedirs(a.out, exist_ok=True)
    written, failed = [], 0
    for fn in (fanout_charts, idle_chart, http_chart, auth_charts, static_chart):
        try:
            written += fn(a.results, a.out)
        except Exception as e:  # noqa: BLE001 - one bad file should not stop the other charts
            print(f"plot.py: {fn.__name__}: {type(e).__name__}: {e}", file=sys.stderr)
            failed += 1
    for w in written:
        print(os.path.relpath(w, REPO))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
