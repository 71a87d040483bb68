#!/usr/bin/env python3
"""Helpers for benches/fanout/run.sh and benches/idle/run.sh (standard library only).

    benchlib.py freeport                              a free TCP port on 127.0.0.1
    benchlib.py machine                               JSON: nproc, kernel, CPU, memory
    benchlib.py versions REPO BIN VENV_PYTHON         JSON: channelgate, rustc, daphne, ...
    benchlib.py metrics ADMIN_URL                     JSON: channelgate_* families summed
    benchlib.py wait-metric ADMIN_URL NAME MIN SECS [LABELS]  poll until sum(NAME{LABELS..}) >= MIN
    benchlib.py wait-metric-max ADMIN_URL NAME MAX SECS       poll until sum(NAME) <= MAX
    benchlib.py quiet MAX_PCT WAIT_S                  wait for CPU busy <= MAX_PCT; JSON reading
    benchlib.py proc PID                              JSON: cpu_s, rss_kib, peak_rss_kib, threads of PID
                                                      and all its descendants (nginx workers, pushpin's services)
    benchlib.py pushpin-conf TEMPLATE OUT SECTION.KEY=VALUE...   copy pushpin.conf, set keys
                                                      (VALUE "-": comment the key out)
    benchlib.py pushpin-config TEMPLATE DIR WS_PORT PUB_PORT BACKEND_PORT N
                                                      the benchmarks' pushpin.conf + routes in DIR
    benchlib.py pushpin-wait-subscribed LOG GROUP MIN SECS  poll pushpin's log until MIN subscribe lines
                                                      (GROUP "prefix*": every group with that prefix)
    benchlib.py pushpin-publishes LOG OFFSET GROUP    JSON: pushpin's publish lines for GROUP since OFFSET
    benchlib.py pushpin-wait-closed BACKEND_URL SECS  poll the backend's /stats until every OPEN was
                                                      followed by a CLOSE or DISCONNECT, or none came for 10 s
    benchlib.py last-json FILE                        the last JSON object line of FILE
    benchlib.py fanout-record ARGS...                 compose + append one fanout JSON line
    benchlib.py fanout-table RESULTS RUN_ID           the table of one run
    benchlib.py idle-record ARGS...                   compose + append one idle JSON line
    benchlib.py idle-table RESULTS RUN_ID             the table of one run

Every network access here goes to 127.0.0.1.
"""
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.request


def freeport():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def sh(cmd, timeout=20):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, shell=isinstance(cmd, str))
        return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else ""
    except Exception as e:  # noqa: BLE001 - a version string is best effort
        return f"unknown ({type(e).__name__})"


def machine():
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "cpu": cpu,
        "mem_gib": round(mem_kib / 1048576, 1),
        "os": sh(". /etc/os-release && echo \"$PRETTY_NAME\""),
        "nofile_hard": sh("ulimit -Hn"),
    }


def binary_mtime(path):
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(os.stat(path).st_mtime))
    except OSError:
        return None


def versions(repo, binary, venv_python):
    def git(*a):
        return sh(["git", "-C", repo, *a])

    pyver = {}
    try:
        out = subprocess.run(
            [venv_python, "-c",
             "import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
             "['daphne', 'channels', 'channels-rabbitmq', 'Django', 'Twisted', 'websockets']}))"],
            capture_output=True, text=True, timeout=30)
        pyver = json.loads(out.stdout)
    except Exception as e:  # noqa: BLE001
        pyver = {"error": str(e)}
    modified = subprocess.run(["git", "-C", repo, "status", "--porcelain", "--untracked-files=no"],
                              capture_output=True, text=True).stdout.strip().splitlines()
    return {
        "channelgate": git("describe", "--always", "--dirty"),
        "channelgate_commit": git("rev-parse", "HEAD"),
        "channelgate_modified_tracked_files": len(modified),
        "channelgate_binary": sh([binary, "--version"]),
        # With --no-build the binary may be older than the tree `channelgate` describes.
        "channelgate_binary_mtime": binary_mtime(binary),
        "channelgate_binary_sha256": sh(["sha256sum", binary]).split(" ")[0],
        "rustc": sh(["rustc", "--version"]),
        "python": sh([venv_python, "--version"]),
        "python_packages": pyver,
        "rabbitmq": sh("dpkg-query -W -f='${Version}' rabbitmq-server"),
        "erlang": sh("dpkg-query -W -f='${Version}' erlang-base"),
        "pushpin": sh("dpkg-query -W -f='${Version}' pushpin 2>/dev/null || true"),
        "pushpin_condure": sh("dpkg-query -W -f='${Version}' condure 2>/dev/null || true"),
        "pushpin_zurl": sh("dpkg-query -W -f='${Version}' zurl 2>/dev/null || true"),
        "nchan": sh("dpkg-query -W -f='${Version}' libnginx-mod-nchan 2>/dev/null || true"),
    }


METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metrics(admin, buckets=False):
    """channelgate_* samples: family -> {labels or "": value}; histogram buckets only
    when asked for."""
    with urllib.request.urlopen(admin.rstrip("/") + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = METRIC_RE.match(line)
        if not m or not m.group(1).startswith("channelgate_"):
            continue
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        if name.endswith("_bucket") and not buckets:
            continue
        try:
            out.setdefault(name, {})[labels] = float(value)
        except ValueError:
            pass
    return out


def metric_sum(ms, name, label_filter=""):
    return sum(v for k, v in ms.get(name, {}).items() if label_filter in k)


def wait_metric(admin, name, bound, secs, label_filter="", at_most=False):
    """Polls until sum(name) >= bound (or <= bound with at_most)."""
    deadline = time.time() + secs
    last = None
    while time.time() < deadline:
        try:
            last = metric_sum(metrics(admin), name, label_filter)
            if (last <= bound) if at_most else (last >= bound):
                print(int(last))
                return 0
        except OSError:
            pass
        time.sleep(0.1)
    print(f"{name}{label_filter} = {last}, wanted {'<=' if at_most else '>='} {bound}", file=sys.stderr)
    return 1


def cpu_busy(interval=0.5):
    """Share of all CPUs busy over `interval` seconds, in percent (from /proc/stat)."""
    def snap():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        idle = v[3] + (v[4] if len(v) > 4 else 0)
        return sum(v), idle
    t0, i0 = snap()
    time.sleep(interval)
    t1, i1 = snap()
    return round(100.0 * (1 - (i1 - i0) / max(1, t1 - t0)), 1)


def quiet(max_pct, wait_s):
    """Waits (at most wait_s) until the machine is at most max_pct busy; reports the reading."""
    start = time.time()
    busy = cpu_busy()
    while busy > max_pct and time.time() - start < wait_s:
        time.sleep(1)
        busy = cpu_busy()
    return {"busy_pct": busy, "waited_s": round(time.time() - start, 1), "quiet": busy <= max_pct,
            "loadavg_1m": float(open("/proc/loadavg").read().split()[0])}


def _proc_one(pid, tck):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    st = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            st[k] = v.strip()
    kib = lambda k: int(st.get(k, "0 kB").split()[0])  # noqa: E731
    return {"ppid": int(fields[1]), "cpu_s": (int(fields[11]) + int(fields[12])) / tck,
            "rss_kib": kib("VmRSS"), "peak_rss_kib": kib("VmHWM"), "threads": int(st.get("Threads", "0"))}


def _comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def proc(pid):
    """CPU time and memory of PID plus all its descendants, summed: nginx's workers, and
    pushpin's runner with condure, zurl, pushpin-proxy and pushpin-handler. `tree` lists
    each process (name, rss_kib, cpu_s)."""
    tck = os.sysconf("SC_CLK_TCK")
    pid = int(pid)
    stats = {pid: _proc_one(pid, tck)}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == pid:
            continue
        try:
            stats[int(d)] = _proc_one(int(d), tck)
        except (OSError, ValueError, IndexError):
            continue
    members, frontier = [pid], [pid]
    while frontier:  # bounded: each pid joins at most once
        kids = [p for p, st in stats.items() if st["ppid"] in frontier and p not in members]
        members += kids
        frontier = kids
    total = {k: 0 for k in ("cpu_s", "rss_kib", "peak_rss_kib", "threads")}
    tree = []
    for p in members:
        st = stats[p]
        for k in total:
            total[k] += st[k]
        tree.append({"pid": p, "name": _comm(p), "rss_kib": st["rss_kib"], "cpu_s": round(st["cpu_s"], 3)})
    total["cpu_s"] = round(total["cpu_s"], 3)
    total["processes"] = len(members)
    if len(members) > 1:
        total["tree"] = tree
    return total


# ------------------------------------------------------------------------ pushpin ---

def pushpin_conf(template, out, settings):
    """Copies pushpin's config TEMPLATE to OUT with SECTION.KEY=VALUE settings applied:
    an existing `key=` line (commented or not) of that section is replaced, a missing key
    is added at the end of its section; VALUE "-" comments the key out (pushpin's built-in
    default applies)."""
    want = {}
    for kv in settings:
        k, _, v = kv.partition("=")
        sec, _, key = k.partition(".")
        if not sec or not key:
            raise SystemExit(f"pushpin-conf: `{kv}` is not SECTION.KEY=VALUE")
        want.setdefault(sec, {})[key] = v
    lines = open(template).read().splitlines()
    out_lines, sec, done = [], None, set()

    def flush(section):
        for key, v in want.get(section, {}).items():
            if (section, key) not in done and v != "-":
                out_lines.append(f"{key}={v}")
            done.add((section, key))
    key_re = re.compile(r"^\s*#?\s*([A-Za-z0-9_]+)\s*=")
    for line in lines:
        m = re.match(r"^\s*\[([^\]]+)\]\s*$", line)
        if m:
            if sec is not None:
                flush(sec)
            sec = m.group(1)
            out_lines.append(line)
            continue
        km = key_re.match(line)
        if sec is not None and km and km.group(1) in want.get(sec, {}):
            key = km.group(1)
            commented = line.lstrip().startswith("#")
            if (sec, key) in done:
                if not commented:
                    out_lines.append("#" + line)  # a second definition: keep it out
                else:
                    out_lines.append(line)
                continue
            v = want[sec][key]
            if v == "-":
                out_lines.append(line if commented else "#" + line + "   # (benchmark: unset, built-in default)")
            else:
                out_lines.append(f"{key}={v}")
            done.add((sec, key))
            continue
        out_lines.append(line)
    if sec is not None:
        flush(sec)
    for section in want:  # sections the template lacks
        if any((section, k) not in done for k in want[section]):
            out_lines += ["", f"[{section}]"]
            flush(section)
    with open(out, "w") as f:
        f.write("\n".join(out_lines) + "\n")


def pushpin_config(template, d, ws_port, pub_port, backend_port, n):
    """Writes D/pushpin.conf (the Debian template, edited) and D/routes for one benchmark
    instance: every port on 127.0.0.1, every ZeroMQ socket, run and log file under D.

    - zurl (the proxy's HTTP client, which carries the WebSocket-over-HTTP requests to
      the backend) runs as a service of this instance: Debian's internal.conf points the
      proxy at the system zurl's sockets in /var/run/zurl, so those are set here;
    - message_rate / message_hwm are unset: the template caps deliveries at 2500/s with
      25000 queued (dropped beyond); the code's default is no cap;
    - client_maxconn (condure's --stream-maxconn) is at least N + 1024;
    - log_level 2 (info): one line per connection and per publish, none per delivery;
      the scripts count the handler's "subscribe" lines to know every client is
      subscribed before they publish or read memory.
    Returns the settings string recorded in the results."""
    os.makedirs(os.path.join(d, "run"), exist_ok=True)
    os.makedirs(os.path.join(d, "log"), exist_ok=True)
    maxconn = max(50000, int(n) + 1024)
    with open(os.path.join(d, "routes"), "w") as f:
        f.write(f"* 127.0.0.1:{int(backend_port)},over_http\n")
    pushpin_conf(template, os.path.join(d, "pushpin.conf"), [
        f"global.rundir={d}/run", "global.ipc_prefix=cg-", "global.port_offset=0",
        "runner.services=condure,zurl,pushpin-proxy,pushpin-handler",
        f"runner.http_port=127.0.0.1:{int(ws_port)}", "runner.https_ports=-", "runner.local_ports=-",
        f"runner.logdir={d}/log", "runner.log_level=2", f"runner.client_maxconn={maxconn}",
        "proxy.routesfile=routes", "proxy.updates_check=off", "proxy.debug=false",
        "proxy.zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in",
        "proxy.zurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream",
        "proxy.zurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out",
        "handler.push_in_spec=ipc://{rundir}/{ipc_prefix}push-in",
        "handler.push_in_sub_specs=ipc://{rundir}/{ipc_prefix}push-in-sub", "handler.push_in_sub_connect=false",
        "handler.push_in_http_addr=127.0.0.1", f"handler.push_in_http_port={int(pub_port)}",
        "handler.stats_spec=ipc://{rundir}/{ipc_prefix}stats",
        "handler.command_spec=ipc://{rundir}/{ipc_prefix}command",
        "handler.message_rate=-", "handler.message_hwm=-",
    ])
    version = sh("dpkg-query -W -f='${Version}' pushpin") or "?"
    return (f"pushpin {version}: runner + condure "
            f"(2 workers) + zurl + pushpin-proxy + pushpin-handler; WebSocket-over-HTTP route to a GRIP backend "
            f"that subscribes each connection on OPEN; message_rate/message_hwm unset (no cap); "
            f"client_maxconn {maxconn}; log_level 2 (no line per delivery)")


SUBSCRIBE_RE = re.compile(r"\[handler\] subscribe \S+ channel=(\S+)\s*$")
PUBLISH_RE = re.compile(r"\[handler\] publish channel=(\S+) receivers=(\d+)")


def pushpin_wait_subscribed(log, group, at_least, secs):
    """Polls pushpin's (info-level) log until `at_least` connections subscribed to `group`
    ("prefix*": to any group starting with prefix); prints the count."""
    if group.endswith("*"):
        def match(g):
            return g.startswith(group[:-1])
    else:
        def match(g):
            return g == group
    deadline = time.time() + secs
    n = 0
    while True:
        try:
            with open(log, errors="replace") as f:
                n = sum(1 for line in f if (m := SUBSCRIBE_RE.search(line)) and match(m.group(1)))
        except OSError:
            n = 0
        if n >= at_least:
            print(n)
            return 0
        if time.time() >= deadline:
            print(f"{n} of {at_least} connections subscribed to {group}", file=sys.stderr)
            print(n)
            return 1
        time.sleep(0.2)


def pushpin_wait_closed(backend, secs, settle=10.0):
    """Polls pushpin_backend.py's /stats until Pushpin is done passing the earlier
    clients' closes on: CLOSE + DISCONNECT >= OPEN, or no new CLOSE / DISCONNECT for
    `settle` seconds (Pushpin does not pass every close on when thousands of clients
    leave at once). Prints the last reading with the seconds waited."""
    start = time.time()
    last, gone, changed = {}, -1, time.time()
    while True:
        try:
            with urllib.request.urlopen(backend.rstrip("/") + "/stats", timeout=5) as r:
                last = json.loads(r.read())
            now_gone = last.get("CLOSE", 0) + last.get("DISCONNECT", 0)
            if now_gone != gone:
                gone, changed = now_gone, time.time()
            if gone >= last.get("OPEN", 0) or time.time() - changed >= settle:
                print(json.dumps({**last, "waited_s": round(time.time() - start, 1)}))
                return 0
        except (OSError, ValueError):
            pass
        if time.time() - start >= secs:
            print(json.dumps({**last, "waited_s": round(time.time() - start, 1)}))
            return 1
        time.sleep(0.5)


def pushpin_publishes(log, offset, group):
    """Pushpin's `publish channel=G receivers=K` lines for `group` after byte `offset`."""
    recv = []
    try:
        with open(log, "rb") as f:
            f.seek(int(offset))
            for raw in f:
                m = PUBLISH_RE.search(raw.decode(errors="replace"))
                if m and m.group(1) == group:
                    recv.append(int(m.group(2)))
    except OSError:
        pass
    return {"publishes": len(recv), "receivers_sum": sum(recv),
            "receivers_min": min(recv) if recv else None, "receivers_max": max(recv) if recv else None}


def last_json(path):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def load(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def append(results, rec):
    os.makedirs(os.path.dirname(results), exist_ok=True)
    with open(results, "a") as f:
        f.write(json.dumps(rec, sort_keys=False) + "\n")


# ------------------------------------------------------------------------- fanout ---

# Counter families whose change over one scenario is kept in the JSON.
CG_DELTAS = [
    "channelgate_hub_delivered_total", "channelgate_hub_dropped_total",
    "channelgate_ws_frames_sent_total", "channelgate_ws_closes_total",
    "channelgate_messages_published_total", "channelgate_broker_consumed_total",
    "channelgate_broker_published_total", "channelgate_broker_decode_failures_total",
    "channelgate_broker_reconnects_total", "channelgate_ws_connects_total",
]


def deltas(before, after):
    out = {}
    for fam in CG_DELTAS:
        keys = set(before.get(fam, {})) | set(after.get(fam, {}))
        for k in sorted(keys):
            d = after.get(fam, {}).get(k, 0) - before.get(fam, {}).get(k, 0)
            if d:
                out[fam.replace("channelgate_", "") + k] = d
    return out


def fanout_record(a):
    """a: dict of paths and values from run.sh (see the argument list there)."""
    fan = last_json(a["fanout_out"]) or {}
    pub = last_json(a["publish_out"]) or {}
    sb, sa = load(a["server_before"], {}), load(a["server_after"], {})
    rb, ra = load(a["rabbit_before"], {}), load(a["rabbit_after"], {})
    mb, ma = load(a["metrics_before"], {}), load(a["metrics_after"], {})
    r = fan.get("results", {})
    lat = r.get("latency_ms", {})
    wire = r.get("wire") or {}
    conn = fan.get("connect", {})
    server_cpu = round(sa.get("cpu_s", 0) - sb.get("cpu_s", 0), 3) if sa and sb else None
    delivered = r.get("delivered")
    rec = {
        "bench": "fanout",
        "run_id": a["run_id"],
        "target": a["target"],
        "scenario": a["scenario"],
        "n": int(a["n"]),
        "messages": int(a["messages"]),
        "rate": float(a["rate"]),
        "payload": a.get("payload", "text"),
        "summary": {
            "deliveries_per_s": r.get("deliveries_per_s"),
            "expected": r.get("expected"),
            "delivered": r.get("delivered"),
            "lost": r.get("lost"),
            "loss_pct": r.get("loss_pct"),
            "p50_ms": lat.get("p50"),
            "p99_ms": lat.get("p99"),
            "max_ms": lat.get("max"),
            "connect_failed": fan.get("connect", {}).get("failed"),
            "published_ok": pub.get("results", {}).get("ok"),
            "published_failed": pub.get("results", {}).get("failed"),
            "server_cpu_s": server_cpu,
            # The cost figure: server CPU (user + system, all its processes) per delivery.
            "server_cpu_us_per_delivery": round(server_cpu * 1e6 / delivered, 3)
            if server_cpu is not None and delivered else None,
            # Raw clients only: every data frame's bytes as received (header + payload,
            # compressed or not) per delivery, and what deflate negotiation gave.
            "wire_bytes_per_delivery": wire.get("data_bytes_per_delivery"),
            "message_bytes_per_message": wire.get("message_bytes_per_message"),
            "compressed_pct": wire.get("compressed_pct"),
            "inflate_errors": wire.get("inflate_errors"),
            "connected": conn.get("ok"),
            "deflate_offered": conn.get("deflate_offered"),
            "deflate_agreed": conn.get("deflate_agreed"),
            "rabbitmq_cpu_s": round(ra.get("cpu_s", 0) - rb.get("cpu_s", 0), 3) if ra and rb else None,
            "server_rss_kib": sa.get("rss_kib"),
            "client_cpu_s": fan.get("client_process", {}).get("cpu_s"),
            "stop": r.get("stop"),
            "busy_before_pct": load(a.get("quiet", ""), {}).get("busy_pct"),
            "ok": bool(fan) and bool(pub) and not wire.get("inflate_errors"),
        },
        "server": {"before": sb, "after": sa, "log_problems": load(a["log_problems"], [])},
        "machine_load_before": load(a.get("quiet", ""), {}),
        "channelgate_metrics_delta": deltas(mb, ma) if ma else None,
        "pushpin_publishes": load(a.get("pushpin_publishes", ""), None),
        "backend": {"before": load(a.get("backend_before", ""), None), "after": load(a.get("backend_after", ""), None)}
        if a.get("backend_before") else None,
        "fanout": fan,
        "publish": pub,
        "params": load(a["params"], {}),
        "machine": load(a["machine"], {}),
        "versions": load(a["versions"], {}),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    append(a["results"], rec)


def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def run_records(results, bench, run_id):
    """The records of one run of `bench` in the JSON-lines file `results`."""
    recs = []
    for line in open(results):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("run_id") == run_id and rec.get("bench") == bench:
            recs.append(rec)
    return recs


# Who each target is compared with in the ratio lines (same N and scenario), and why.
FANOUT_PEERS = {
    "channelgate-memory": ["daphne", "nchan", "pushpin"],
    "channelgate-amqp": ["daphne", "nchan", "pushpin"],
    "channelgate-tls": ["nchan-tls", "channelgate-memory"],      # wss vs wss; wss over ws
    "channelgate-deflate": ["nchan-deflate", "channelgate-memory"],  # deflate vs deflate; with vs without
    "nchan-tls": ["nchan"],
    "nchan-deflate": ["nchan"],
}


def fanout_table(results, run_id):
    recs = run_records(results, "fanout", run_id)
    if not recs:
        print("no results for run", run_id)
        return
    hdr = (f"{'N':>6} {'scenario':<9} {'target':<19} {'msg/s':>6} {'deliv/s':>9} {'delivered/expected':>19} "
           f"{'loss%':>6} {'p50 ms':>7} {'p99 ms':>8} {'max ms':>8} {'srv cpu s':>9} {'us/deliv':>8} "
           f"{'mq cpu s':>8} {'cli cpu s':>9}")
    print(hdr)
    by = {}
    for rec in recs:
        s = rec["summary"]
        if s.get("client_cpu_s") is None:
            s["client_cpu_s"] = rec.get("fanout", {}).get("client_process", {}).get("cpu_s")
        if s.get("server_cpu_us_per_delivery") is None and s.get("server_cpu_s") is not None and s.get("delivered"):
            s["server_cpu_us_per_delivery"] = round(s["server_cpu_s"] * 1e6 / s["delivered"], 3)
        by[(rec["n"], rec["scenario"], rec["target"])] = s
        de = f"{fmt(s['delivered'])}/{fmt(s['expected'])}"
        rate = "burst" if not rec.get("rate") else fmt(rec["rate"], 0)
        print(f"{rec['n']:>6} {rec['scenario']:<9} {rec['target']:<19} {rate:>6} {fmt(s['deliveries_per_s'], 0):>9} "
              f"{de:>19} {fmt(s['loss_pct'], 2):>6} {fmt(s['p50_ms'], 2):>7} {fmt(s['p99_ms'], 2):>8} "
              f"{fmt(s['max_ms'], 1):>8} {fmt(s['server_cpu_s'], 2):>9} {fmt(s.get('server_cpu_us_per_delivery'), 2):>8} "
              f"{fmt(s['rabbitmq_cpu_s'], 2):>8} {fmt(s.get('client_cpu_s'), 2):>9}")
    wired = [r for r in recs if r["summary"].get("wire_bytes_per_delivery") is not None]
    if wired:
        print()
        print("on the wire (raw clients): every data frame's header + payload as received, per delivery")
        print(f"{'N':>6} {'scenario':<9} {'target':<19} {'deflate agreed':>14} {'compressed%':>11} "
              f"{'message B':>9} {'wire B/deliv':>12} {'us/deliv':>8} {'inflate errors':>14}")
        for r in wired:
            s = r["summary"]
            agreed = f"{fmt(s.get('deflate_agreed'))}/{fmt(s.get('connected'))}" if s.get("deflate_offered") else "not offered"
            print(f"{r['n']:>6} {r['scenario']:<9} {r['target']:<19} {agreed:>14} {fmt(s.get('compressed_pct'), 1):>11} "
                  f"{fmt(s.get('message_bytes_per_message'), 0):>9} {fmt(s.get('wire_bytes_per_delivery'), 1):>12} "
                  f"{fmt(s.get('server_cpu_us_per_delivery'), 2):>8} {fmt(s.get('inflate_errors')):>14}")
    print()
    print("ratios (same N and scenario): deliv/s > 1 and p50, p99, cpu/deliv, wire/deliv < 1 favour the first")

    def ratio(x, y):
        return f"{x / y:.2f}" if x and y else "-"
    for (n, sc, tg), s in sorted(by.items()):
        for peer in FANOUT_PEERS.get(tg, []):
            d = by.get((n, sc, peer))
            if not d:
                continue
            name = f"{tg}/{peer}"
            line = (f"  N={n:<6} {sc:<9} {name:<38} deliv/s {ratio(s['deliveries_per_s'], d['deliveries_per_s']):>6}"
                    f"   p50 {ratio(s['p50_ms'], d['p50_ms']):>6}   p99 {ratio(s['p99_ms'], d['p99_ms']):>6}"
                    f"   cpu/deliv {ratio(s.get('server_cpu_us_per_delivery'), d.get('server_cpu_us_per_delivery')):>6}")
            if s.get("wire_bytes_per_delivery") and d.get("wire_bytes_per_delivery"):
                line += f"   wire/deliv {ratio(s['wire_bytes_per_delivery'], d['wire_bytes_per_delivery']):>6}"
            print(line)
    problems = [(r["target"], r["scenario"], r["n"], p) for r in recs for p in r["server"].get("log_problems", [])]
    bad = [r for r in recs if (r["summary"].get("lost") or 0) > 0 or r["summary"].get("connect_failed")
           or r["summary"].get("published_failed") or not r["summary"].get("ok")]
    undeflated = [r for r in recs if r["summary"].get("deflate_offered")
                  and (r["summary"].get("deflate_agreed") or 0) < (r["summary"].get("connected") or 0)]
    if bad or problems or undeflated:
        print()
    for r in recs:
        if (r["summary"].get("busy_before_pct") or 0) > 25:
            print(f"WARNING: {r['target']} {r['scenario']} N={r['n']}: the machine was "
                  f"{r['summary']['busy_before_pct']}% busy before the run (other load); figures are skewed")
    for r in bad:
        s = r["summary"]
        print(f"WARNING: {r['target']} {r['scenario']} N={r['n']}: lost {s.get('lost')}, connect failures "
              f"{s.get('connect_failed')}, publish failures {s.get('published_failed')}, "
              f"inflate errors {s.get('inflate_errors')}, stop: {s.get('stop')}")
    for r in undeflated:
        s = r["summary"]
        answers = r.get("fanout", {}).get("connect", {}).get("extension_answers")
        print(f"WARNING: {r['target']} {r['scenario']} N={r['n']}: the clients offered permessage-deflate; "
              f"the server agreed on {s.get('deflate_agreed')} of {s.get('connected')} connections (answers: {answers})")
    for tg, sc, n, p in problems[:20]:
        print(f"LOG {tg} {sc} N={n}: {p}")


# --------------------------------------------------------------------------- idle ---

def idle_record(a):
    hold = last_json(a["hold_out"]) or {}
    before, after = load(a["before"], {}), load(a["after"], {})
    n_open = hold.get("results", {}).get("open_at_end")
    connected = load(a["ready"], {}).get("connected")
    delta = (after.get("rss_kib", 0) - before.get("rss_kib", 0)) if before and after else None
    per = round(delta * 1024 / connected) if delta is not None and connected else None
    rec = {
        "bench": "idle",
        "run_id": a["run_id"],
        "target": a["target"],
        "n": int(a["n"]),
        "summary": {
            "connected": connected,
            "open_at_end": n_open,
            "rss_before_kib": before.get("rss_kib"),
            "rss_after_kib": after.get("rss_kib"),
            "rss_delta_kib": delta,
            "rss_after_close_kib": load(a.get("after_close", ""), {}).get("rss_kib"),
            "bytes_per_connection": per,
            "server_threads": after.get("threads"),
            "connect_failed": hold.get("connect", {}).get("failed"),
            "connect_p99_ms": hold.get("connect", {}).get("time_ms", {}).get("p99"),
            # Raw clients (-deflate targets): offered permessage-deflate; on how many
            # connections the server agreed.
            "deflate_offered": hold.get("connect", {}).get("deflate_offered"),
            "deflate_agreed": hold.get("connect", {}).get("deflate_agreed"),
            "busy_before_pct": load(a.get("quiet", ""), {}).get("busy_pct"),
        },
        "server": {"before": before, "after": after, "after_close": load(a.get("after_close", ""), {}),
                   "log_problems": load(a["log_problems"], [])},
        # pushpin's GRIP backend (a separate process, not in the server's figures).
        "backend": {"before": load(a.get("backend_before", ""), None), "after": load(a.get("backend_after", ""), None)}
        if a.get("backend_before") else None,
        "hold": hold,
        "params": load(a["params"], {}),
        "machine": load(a["machine"], {}),
        "versions": load(a["versions"], {}),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    append(a["results"], rec)


def idle_table(results, run_id):
    recs = run_records(results, "idle", run_id)
    print(f"{'N':>7} {'target':<19} {'connected':>9} {'open@end':>8} {'RSS before':>11} {'RSS after':>11} "
          f"{'delta KiB':>10} {'bytes/conn':>10} {'connect p99 ms':>14} {'RSS after close':>15} {'deflate':>11}")
    by = {}
    for r in recs:
        s = r["summary"]
        by[(r["n"], r["target"])] = s
        print(f"{r['n']:>7} {r['target']:<19} {fmt(s['connected']):>9} {fmt(s['open_at_end']):>8} "
              f"{fmt(s['rss_before_kib']):>11} {fmt(s['rss_after_kib']):>11} {fmt(s['rss_delta_kib']):>10} "
              f"{fmt(s['bytes_per_connection']):>10} {fmt(s['connect_p99_ms'], 1):>14} {fmt(s.get('rss_after_close_kib')):>15} "
              f"{(fmt(s.get('deflate_agreed')) + '/' + fmt(s['connected'])) if s.get('deflate_offered') else '-':>11}")
    # Plain targets against plain peers here; run.sh prints the wss and deflate pairs.
    for (n, tg), s in sorted(by.items()):
        for peer in ("daphne", "nchan", "pushpin"):
            d = by.get((n, peer))
            if tg == "channelgate" and d and s["bytes_per_connection"] and d["bytes_per_connection"]:
                print(f"  N={n} {tg}/{peer} bytes per connection: {s['bytes_per_connection'] / d['bytes_per_connection']:.2f}")
    for r in recs:
        s = r["summary"]
        if (s.get("busy_before_pct") or 0) > 25:
            print(f"WARNING: {r['target']} N={r['n']}: the machine was {s['busy_before_pct']}% busy before the run")
        if s.get("deflate_offered") and (s.get("deflate_agreed") or 0) < (s.get("connected") or 0):
            print(f"WARNING: {r['target']} N={r['n']}: the clients offered permessage-deflate; the server agreed on "
                  f"{s.get('deflate_agreed')} of {s.get('connected')} connections "
                  f"(answers: {r.get('hold', {}).get('connect', {}).get('extension_answers')})")
        if s.get("connect_failed") or (s.get("open_at_end") is not None and s.get("connected") is not None
                                       and s["open_at_end"] < s["connected"]):
            print(f"WARNING: {r['target']} N={r['n']}: connect failures {s.get('connect_failed')}, "
                  f"open at end {s.get('open_at_end')} of {s.get('connected')}")
        for p in r["server"].get("log_problems", [])[:10]:
            print(f"LOG {r['target']} N={r['n']}: {p}")


def kv(argv):
    out = {}
    for a in argv:
        k, _, v = a.partition("=")
        out[k] = v
    return out


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "freeport":
        print(freeport())
    elif cmd == "machine":
        print(json.dumps(machine()))
    elif cmd == "versions":
        print(json.dumps(versions(argv[2], argv[3], argv[4])))
    elif cmd == "metrics":
        print(json.dumps(metrics(argv[2])))
    elif cmd == "wait-metric":
        label = argv[6] if len(argv) > 6 else ""
        return wait_metric(argv[2], argv[3], float(argv[4]), float(argv[5]), label)
    elif cmd == "wait-metric-max":
        return wait_metric(argv[2], argv[3], float(argv[4]), float(argv[5]), "", at_most=True)
    elif cmd == "quiet":
        print(json.dumps(quiet(float(argv[2]), float(argv[3]))))
    elif cmd == "proc":
        print(json.dumps(proc(argv[2])))
    elif cmd == "pushpin-conf":
        pushpin_conf(argv[2], argv[3], argv[4:])
    elif cmd == "pushpin-config":
        print(pushpin_config(argv[2], argv[3], argv[4], argv[5], argv[6], argv[7]))
    elif cmd == "pushpin-wait-subscribed":
        return pushpin_wait_subscribed(argv[2], argv[3], int(argv[4]), float(argv[5]))
    elif cmd == "pushpin-wait-closed":
        return pushpin_wait_closed(argv[2], float(argv[3]))
    elif cmd == "pushpin-publishes":
        print(json.dumps(pushpin_publishes(argv[2], argv[3], argv[4])))
    elif cmd == "last-json":
        v = last_json(argv[2])
        print(json.dumps(v) if v is not None else "")
    elif cmd == "fanout-record":
        fanout_record(kv(argv[2:]))
    elif cmd == "fanout-last":
        line = open(argv[2]).read().splitlines()[-1]
        r = json.loads(line)["summary"]
        print(f"[fanout] {argv[3]}: {r['delivered']}/{r['expected']} delivered, {r['deliveries_per_s']} deliveries/s, "
              f"p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, stop: {r['stop']}")
    elif cmd == "fanout-table":
        fanout_table(argv[2], argv[3])
    elif cmd == "idle-record":
        idle_record(kv(argv[2:]))
    elif cmd == "idle-table":
        idle_table(argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
