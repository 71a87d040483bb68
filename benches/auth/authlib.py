#!/usr/bin/env python3
"""Helpers for benches/auth/run.sh (standard library only; reuses benches/fanout/benchlib.py).

    authlib.py login BASE_URL USER PASSWORD         POST /accounts/login/; prints "sessionid=..."
    authlib.py check-auth URL COOKIE                GET URL with the cookie; prints the JSON answer, exit 1 unless 200
    authlib.py metrics ADMIN_URL                    JSON: channelgate_* samples, histogram buckets kept
    authlib.py versions REPO BIN VENV_PYTHON        benchlib's versions + gunicorn and wrk
    authlib.py wrk FILE                             JSON from wrk --latency output
    authlib.py settle SECS PID...                   wait until the PIDs (and children) stop using CPU
    authlib.py check ARGS...                        record a functional check (cg-load output) in checks=FILE
    authlib.py round ARGS...                        compose one round (target x round) and append it to rounds=FILE
    authlib.py record ARGS...                       fold the rounds into one JSON line per target, append to results
    authlib.py table RESULTS RUN_ID                 the table of one run, with the ratios

Every network access here goes to 127.0.0.1.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in benches/fanout (not this bench's directory)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fanout"))
import benchlib  # noqa: E402

load = benchlib.load
last_json = benchlib.last_json
fmt = benchlib.fmt


def _loopback(url):
    host = urllib.parse.urlsplit(url).hostname or ""
    if not host.startswith("127.") and host not in ("localhost", "::1"):
        raise SystemExit(f"authlib: refusing a non-loopback URL: {url}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):  # noqa: D401 - keep the login answer as it is
        return None


def login(base, user, password):
    url = base.rstrip("/") + "/accounts/login/"
    _loopback(url)
    data = urllib.parse.urlencode({"username": user, "password": password}).encode()
    opener = urllib.request.build_opener(_NoRedirect())
    req = urllib.request.Request(url, data=data, method="POST")
    try:
        resp = opener.open(req, timeout=10)
    except urllib.error.HTTPError as e:
        print(f"login: HTTP {e.code}: {e.read()[:200]!r}", file=sys.stderr)
        return 1
    for value in resp.headers.get_all("Set-Cookie") or []:
        first = value.split(";", 1)[0].strip()
        if first.startswith("sessionid="):
            print(first)
            return 0
    print(f"login: no sessionid cookie in the answer (status {resp.status})", file=sys.stderr)
    return 1


def check_auth(url, cookie):
    _loopback(url)
    req = urllib.request.Request(url, headers={"Cookie": cookie})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read().decode()
            print(body)
            return 0 if r.status == 200 else 1
    except urllib.error.HTTPError as e:
        print(f"HTTP {e.code}", file=sys.stderr)
        return 1


# -------------------------------------------------------------------- metrics ---

def metrics(admin):
    """channelgate_* samples, family -> {labels: value}, histogram buckets included."""
    _loopback(admin)
    return benchlib.metrics(admin, buckets=True)


def _delta_family(before, after, fam):
    keys = set(before.get(fam, {})) | set(after.get(fam, {}))
    return {k: after.get(fam, {}).get(k, 0) - before.get(fam, {}).get(k, 0) for k in keys}


def _le(labels):
    m = re.search(r'le="([^"]+)"', labels)
    return float("inf") if m and m.group(1) == "+Inf" else float(m.group(1)) if m else None


def auth_histogram(before, after, outcome_filter='outcome="accepted"'):
    """Auth subrequest timing over the round from channelgate_ws_auth_duration_seconds:
    count, mean, and p50/p99 estimated from the buckets (upper bound of the bucket that holds
    the quantile; the buckets are 1, 2.5, 5, 10, 25, 50, 100, 250 ms ...)."""
    fam = "channelgate_ws_auth_duration_seconds"
    cnt = sum(v for k, v in _delta_family(before, after, fam + "_count").items() if outcome_filter in k)
    tot = sum(v for k, v in _delta_family(before, after, fam + "_sum").items() if outcome_filter in k)
    buckets = {}
    for k, v in _delta_family(before, after, fam + "_bucket").items():
        if outcome_filter in k:
            le = _le(k)
            buckets[le] = buckets.get(le, 0) + v
    outcomes = {}
    for k, v in _delta_family(before, after, fam + "_count").items():
        if v:
            m = re.search(r'outcome="([^"]*)"', k)
            outcomes[m.group(1) if m else k] = int(v)

    def q(p):
        if not cnt:
            return None
        need = p * cnt
        for le in sorted(buckets):
            if buckets[le] >= need:
                return None if le == float("inf") else round(le * 1000, 3)
        return None
    return {"count": int(cnt), "mean_ms": round(tot / cnt * 1000, 3) if cnt else None,
            "p50_le_ms": q(0.50), "p99_le_ms": q(0.99), "by_outcome": outcomes}


def counter_deltas(before, after, fams):
    out = {}
    for fam in fams:
        for k, v in sorted(_delta_family(before, after, fam).items()):
            if v:
                out[fam.replace("channelgate_", "") + k] = v
    return out


CG_COUNTERS = ["channelgate_ws_connects_total", "channelgate_ws_closes_total",
               "channelgate_upstream_errors_total", "channelgate_upstream_retries_total",
               "channelgate_http_requests_total"]


# ----------------------------------------------------------------------- misc ---

def versions(repo, binary, venv_python):
    v = benchlib.versions(repo, binary, venv_python)
    try:
        out = subprocess.run([venv_python, "-c", "import importlib.metadata as m; print(m.version('gunicorn'))"],
                             capture_output=True, text=True, timeout=30)
        v.setdefault("python_packages", {})["gunicorn"] = out.stdout.strip()
    except Exception as e:  # noqa: BLE001
        v.setdefault("python_packages", {})["gunicorn"] = f"unknown ({e})"
    v["wrk"] = benchlib.sh("wrk --version 2>&1 | head -n 1")
    return v


def _ms(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s.strip())
    if not m:
        return None
    x = float(m.group(1))
    return round({"us": x / 1000, "ms": x, "s": x * 1000, "m": x * 60000}[m.group(2)], 3)


def wrk(path):
    try:
        text = open(path).read()
    except OSError:
        return {}
    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+\w+)", text)
    out["requests"] = int(m.group(1)) if m else None
    for p in ("50", "90", "99"):
        m = re.search(rf"^\s+{p}%\s+(\S+)", text, re.M)
        out[f"p{p}_ms"] = _ms(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return out


def _cpu(before, after):
    return round(after.get("cpu_s", 0) - before.get("cpu_s", 0), 3) if before and after else None


def round_record(a):
    """One measurement (target x round) from the files run.sh wrote."""
    target, kind = a["target"], a["kind"]
    sb, sa = load(a["server_before"], {}), load(a["server_after"], {})
    gb, ga = load(a["app_before"], {}), load(a["app_after"], {})
    rb, ra = load(a["rabbit_before"], {}), load(a["rabbit_after"], {})
    mb, ma = load(a.get("metrics_before", ""), {}) or {}, load(a.get("metrics_after", ""), {}) or {}
    rec = {"target": target, "round": int(a["round"]), "kind": kind,
           "quiet": load(a["quiet"], {}), "wall_clock": a.get("started"),
           "settled_s": float(a["settled_s"]) if a.get("settled_s") else None}
    cpu = {"server_cpu_s": _cpu(sb, sa), "app_cpu_s": _cpu(gb, ga), "rabbitmq_cpu_s": _cpu(rb, ra)}
    if kind == "wrk":
        w = wrk(a["out"])
        ok = w.get("requests") or 0
        rec.update({"per_s": w.get("rps"), "ok": ok, "failed": (w.get("non_2xx") or 0) + (w.get("socket_errors") or 0),
                    "errors": {"non_2xx": w.get("non_2xx"), "socket_errors": w.get("socket_errors")},
                    "p50_ms": w.get("p50_ms"), "p99_ms": w.get("p99_ms"), "max_ms": None, "wrk": w})
    else:
        c = last_json(a["out"]) or {}
        con = c.get("connect", {})
        t = con.get("time_ms", {})
        ok = con.get("ok") or 0
        rec.update({"per_s": con.get("per_s"), "ok": ok, "failed": con.get("failed"), "errors": con.get("errors", {}),
                    "requested": con.get("requested"), "wall_s": con.get("wall_s"),
                    "p50_ms": t.get("p50") if ok else None, "p90_ms": t.get("p90") if ok else None,
                    "p99_ms": t.get("p99") if ok else None, "max_ms": t.get("max") if ok else None,
                    "mean_ms": t.get("mean") if ok else None,
                    "client_cpu_s": c.get("client_process", {}).get("cpu_s"), "cg_load": c})
    for k in ("app_tcp_time_wait_before", "app_tcp_time_wait_after", "app_tcp_established_after"):
        if a.get(k, "").isdigit():
            rec[k] = int(a[k])
    rec.update(cpu)
    total = sum(v for v in cpu.values() if v)
    rec["cpu_ms_per_op"] = round(total * 1000 / ok, 3) if ok else None
    rec["server_cpu_ms_per_op"] = round(cpu["server_cpu_s"] * 1000 / ok, 3) if ok and cpu["server_cpu_s"] is not None else None
    if ma:
        rec["auth_subrequest"] = auth_histogram(mb, ma) if target == "channelgate-auth" else None
        rec["channelgate_metrics_delta"] = counter_deltas(mb, ma, CG_COUNTERS)
    with open(a["rounds"], "a") as f:
        f.write(json.dumps(rec) + "\n")
    short = {k: rec.get(k) for k in ("target", "round", "per_s", "ok", "failed", "p50_ms", "p99_ms", "cpu_ms_per_op")}
    if rec.get("errors"):
        short["errors"] = rec["errors"]
    if rec.get("auth_subrequest"):
        short["auth_ms_mean"] = rec["auth_subrequest"]["mean_ms"]
    print("[auth] " + json.dumps(short), file=sys.stderr)


def settle(secs, pids):
    """Waits (at most secs) until PIDs and their children together use < 3 % of one CPU
    over 0.5 s: the server has finished the work the last round left (closes, group
    leaves, unbinds). Prints the seconds waited."""
    start = time.time()

    def cpu():
        tot = 0.0
        for p in pids:
            try:
                tot += benchlib.proc(p)["cpu_s"]
            except (OSError, ValueError, IndexError, KeyError):
                pass
        return tot
    last = cpu()
    while time.time() - start < secs:
        time.sleep(0.5)
        now = cpu()
        if now - last < 0.015:
            break
        last = now
    print(round(time.time() - start, 1))


def check(a):
    """expect=ok: every connection succeeded; expect=refused: none did, all with HTTP 403;
    expect=frames: the held client received at least one frame (the group publish)."""
    c = last_json(a["out"]) or {}
    con, res = c.get("connect", {}), c.get("results", {})
    errors = con.get("errors", {})
    exp = a["expect"]
    if exp == "ok":
        ok = bool(con) and con.get("ok") == con.get("requested") and not con.get("failed")
    elif exp == "refused":
        ok = bool(con) and con.get("ok") == 0 and set(errors) == {"http 403"}
    else:
        ok = (res.get("frames_received") or 0) >= 1
    entry = {"ok": ok, "expect": exp, "connected": con.get("ok"), "failed": con.get("failed"),
             "errors": errors, "frames_received": res.get("frames_received"),
             "connect_p50_ms": con.get("time_ms", {}).get("p50")}
    if a.get("note"):
        entry["note"] = a["note"]
    checks = load(a["checks"], {}) or {}
    checks.setdefault(a["target"], {})[a["name"]] = entry
    with open(a["checks"], "w") as f:
        json.dump(checks, f)
    print(f"[auth] check {a['target']} {a['name']}: {'ok' if ok else 'FAILED'} {json.dumps(entry)}", file=sys.stderr)
    return 0 if ok else 1


def _median(vals):
    vals = [v for v in vals if v is not None]
    return round(statistics.median(vals), 3) if vals else None


def record(a):
    rounds = [json.loads(line) for line in open(a["rounds"]) if line.strip()]
    checks = load(a["checks"], {}) or {}
    params = load(a["params"], {})
    machine, vers = load(a["machine"], {}), load(a["versions"], {})
    problems = load(a["log_problems"], {}) or {}
    for target in a["targets"].split(","):
        rs = [r for r in rounds if r["target"] == target]
        if not rs:
            continue
        errors = {}
        for r in rs:
            for k, v in (r.get("errors") or {}).items():
                if v:
                    errors[k] = errors.get(k, 0) + v
        summary = {
            "unit": "req/s" if rs[0]["kind"] == "wrk" else "connects/s",
            "per_s": _median(r["per_s"] for r in rs),
            "p50_ms": _median(r["p50_ms"] for r in rs),
            "p99_ms": _median(r["p99_ms"] for r in rs),
            "max_ms": max((r["max_ms"] for r in rs if r.get("max_ms") is not None), default=None),
            "ok": sum(r["ok"] or 0 for r in rs),
            "failed": sum(r["failed"] or 0 for r in rs),
            "errors": errors,
            "cpu_ms_per_op": _median(r.get("cpu_ms_per_op") for r in rs),
            "server_cpu_ms_per_op": _median(r.get("server_cpu_ms_per_op") for r in rs),
            "rounds": len(rs),
            "busy_before_pct_max": max((r["quiet"].get("busy_pct") or 0) for r in rs),
        }
        auth = [r["auth_subrequest"] for r in rs if r.get("auth_subrequest")]
        if auth:
            summary["auth_subrequest_mean_ms"] = _median(x["mean_ms"] for x in auth)
            summary["auth_subrequest_p99_le_ms"] = _median(x["p99_le_ms"] for x in auth)
            summary["auth_subrequest_count"] = sum(x["count"] for x in auth)
        rec = {
            "bench": "auth",
            "run_id": a["run_id"],
            "target": target,
            "n": int(params.get("n", 0)),
            "concurrency": int(params.get("concurrency", 0)),
            "stat": f"median of {len(rs)} rounds",
            "summary": summary,
            "checks": checks.get(target, {}),
            "rounds": rs,
            "log_problems": problems.get(target, []),
            "params": params,
            "machine": machine,
            "versions": vers,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        benchlib.append(a["results"], rec)


def _ratio(x, y):
    return f"{x / y:.2f}" if x and y else "-"


def table(results, run_id):
    recs = {}
    for line in open(results):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("bench") == "auth" and r.get("run_id") == run_id:
            recs[r["target"]] = r
    if not recs:
        print("no results for run", run_id)
        return
    any_rec = next(iter(recs.values()))
    print(f"{'target':<19} {'rate':>10} {'unit':<10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'ok':>6} {'failed':>6} {'cpu ms/op':>9} {'auth mean ms':>12}")
    for tg, r in recs.items():
        s = r["summary"]
        print(f"{tg:<19} {fmt(s['per_s'], 0):>10} {s['unit']:<10} {fmt(s['p50_ms'], 2):>8} {fmt(s['p99_ms'], 2):>8} "
              f"{fmt(s['max_ms'], 1):>8} {s['ok']:>6} {s['failed']:>6} {fmt(s['cpu_ms_per_op'], 2):>9} "
              f"{fmt(s.get('auth_subrequest_mean_ms'), 2):>12}")
    print()
    print("ratios (rate > 1 and p50/p99/cpu < 1 favour the first):")
    pairs = [("channelgate-auth", "daphne-auth"), ("channelgate-noauth", "daphne-noauth"),
             ("channelgate-auth", "channelgate-noauth"), ("daphne-auth", "daphne-noauth"),
             ("channelgate-auth", "app-ws-auth")]
    for x, y in pairs:
        if x in recs and y in recs:
            a_, b_ = recs[x]["summary"], recs[y]["summary"]
            print(f"  {x + '/' + y:<38} rate {_ratio(a_['per_s'], b_['per_s']):>6}   p50 {_ratio(a_['p50_ms'], b_['p50_ms']):>6}"
                  f"   p99 {_ratio(a_['p99_ms'], b_['p99_ms']):>6}   cpu/op {_ratio(a_['cpu_ms_per_op'], b_['cpu_ms_per_op']):>6}")
    notes = []
    for tg, r in recs.items():
        s, ch = r["summary"], r.get("checks", {})
        if s["failed"]:
            notes.append(f"WARNING: {tg}: {s['failed']} failed ({json.dumps(s['errors'])})")
        if (s.get("busy_before_pct_max") or 0) > 25:
            notes.append(f"WARNING: {tg}: the machine was {s['busy_before_pct_max']}% busy before a round (other load)")
        for k, v in ch.items():
            if isinstance(v, dict) and v.get("ok") is False:
                notes.append(f"WARNING: {tg}: check {k} failed: {json.dumps(v)[:300]}")
        for p in r.get("log_problems", [])[:10]:
            notes.append(f"LOG {tg}: {p}")
    if notes:
        print()
        print("\n".join(notes))
    cpu = any_rec["params"].get("cpu_accounting", "")
    if cpu:
        print()
        print(f"cpu ms/op: {cpu}")


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "login":
        return login(argv[2], argv[3], argv[4])
    if cmd == "check-auth":
        return check_auth(argv[2], argv[3])
    if cmd == "metrics":
        print(json.dumps(metrics(argv[2])))
    elif cmd == "versions":
        print(json.dumps(versions(argv[2], argv[3], argv[4])))
    elif cmd == "wrk":
        print(json.dumps(wrk(argv[2])))
    elif cmd == "settle":
        settle(float(argv[2]), [int(p) for p in argv[3:] if p])
    elif cmd == "check":
        return check(benchlib.kv(argv[2:]))
    elif cmd == "round":
        round_record(benchlib.kv(argv[2:]))
    elif cmd == "record":
        record(benchlib.kv(argv[2:]))
    elif cmd == "table":
        table(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
