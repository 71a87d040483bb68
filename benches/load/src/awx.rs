//! `publish --payload awx`: an AWX-like job-event stream, what AWX sends to a job's
//! `job_events-<id>` group. Each text is one JSON event whose size is drawn per sequence
//! number, uniformly in 300–2,000 bytes (mean about 1,290 bytes; the smallest event, a
//! task start with its 80-column banner, is about 430 bytes, so draws below that come out
//! at that size):
//! - below 700 bytes, `playbook_on_task_start`: `{"type": "job_event", "event": ...,
//!   "counter": n, "uuid": ..., "created": ..., "event_data": {task, play, ...},
//!   "stdout": "\r\nTASK [...] ****..."}` with ANSI-coloured result lines after the banner;
//! - above, a host result (`runner_on_ok`, ...): AWX's serializer fields (`id`, `job`,
//!   `host_name`, `play`, `task`, `start_line`, ... and, when they fit, `summary_fields`
//!   and `related`), `event_data` with the module result `res` (`rc`, `start`, `delta`,
//!   `invocation.module_args` with every default, as Ansible reports them when they fit)
//!   and the module's output twice, as `res.stdout` and `res.stdout_lines`; `stdout` is
//!   the coloured display line (`ok: [web-03]`), padded to the exact size.
//!
//! UUIDs, durations and versions are random. The first two keys are the benchmark's own,
//! `"t"` (ns since the epoch, taken when the text is made) and `"seq"`, so the clients
//! read them without parsing the rest. The same seq gives the same event apart from `t`
//! and the timestamps. Compressed alone (raw deflate, level 6, 32 KiB window, what a
//! server with server_no_context_takeover does per message) the stream shrinks about
//! 2.2×: per-message deflate cannot do better on it.

use crate::util::now_ns;

/// Size range of the events, in bytes (inclusive).
pub const MIN_SIZE: usize = 300;
pub const MAX_SIZE: usize = 2000;
/// Events below this size are task-start events (small event_data); above, host results.
const SMALL: usize = 700;

const HOSTS: &[&str] = &[
    "web-01",
    "web-02",
    "web-03",
    "web-04",
    "web-05",
    "web-06",
    "db-01",
    "db-02",
    "cache-01",
    "lb-01",
    "worker-01",
    "worker-02",
    "worker-03",
];
const TASKS: &[(&str, &str)] = &[
    ("Gathering Facts", "gather_facts"),
    ("Install packages", "apt"),
    ("Template application config", "template"),
    ("Ensure nginx is running", "service"),
    ("Copy TLS certificates", "copy"),
    ("Check disk space", "command"),
    ("Run database migrations", "command"),
    ("Create application user", "user"),
    ("Sync static files", "synchronize"),
    ("Restart workers", "systemd"),
];
const ITEMS: &[&str] = &[
    "nginx",
    "postgresql-15",
    "python3-psycopg2",
    "redis-server",
    "rsync",
    "chrony",
    "ca-certificates",
    "libpq-dev",
    "git",
    "curl",
    "supervisor",
    "uwsgi",
];
const PLAYS: &[&str] = &["Deploy web tier", "Configure database", "Rolling restart"];
const ROLES: &[&str] = &["common", "webserver", "postgres", "app"];

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut r = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        r.next();
        r
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    fn uuid(&mut self) -> String {
        let (a, b) = (self.next(), self.next());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }
}

/// A JSON string literal.
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// "2026-12-01T06:00:00.123456Z" for `ns` since the epoch.
pub fn iso8601(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86400, secs % 86400);
    // Howard Hinnant's days-to-civil.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ns % 1_000_000_000 / 1000
    )
}

const JOB: u64 = 4711;

/// What AWX's serializer adds around every event: API links and summary fields.
fn related(id: u64, hostid: usize) -> String {
    format!(
        r#""related": {{"job": "/api/v2/jobs/{JOB}/", "host": "/api/v2/hosts/{hostid}/", "children": "/api/v2/job_events/{id}/children/"}}"#
    )
}

fn summary_fields(hostid: usize, host: &str) -> String {
    format!(
        concat!(
            r#""summary_fields": {{"host": {{"id": {hostid}, "name": "{host}", "description": ""}}, "#,
            r#""job": {{"id": {job}, "name": "Deploy production", "description": "", "status": "running", "#,
            r#""failed": false, "elapsed": 0.0, "type": "job", "job_template_id": 9, "#,
            r#""job_template_name": "Deploy production"}}, "role": {{}}}}"#
        ),
        hostid = hostid,
        host = host,
        job = JOB
    )
}

/// The module result's `invocation`: Ansible lists every argument, defaults included.
fn module_args(module: &str, item: &str) -> String {
    let args = match module {
        "apt" => format!(
            r#""name": ["{item}"], "state": "present", "update_cache": true, "cache_valid_time": 3600, "purge": false, "force": false, "upgrade": null, "dpkg_options": "force-confdef,force-confold", "autoremove": false, "autoclean": false, "install_recommends": null, "only_upgrade": false, "allow_unauthenticated": false, "allow_downgrade": false, "deb": null, "default_release": null, "lock_timeout": 60, "policy_rc_d": null, "update_cache_retries": 5"#
        ),
        "template" | "copy" => format!(
            r#""src": "{item}.conf.j2", "dest": "/etc/{item}/{item}.conf", "mode": "0644", "owner": "root", "group": "root", "backup": false, "force": true, "follow": false, "validate": null, "newline_sequence": "\n", "trim_blocks": true, "lstrip_blocks": false, "output_encoding": "utf-8", "unsafe_writes": false, "seuser": null, "serole": null, "selevel": null, "setype": null, "attributes": null"#
        ),
        "service" | "systemd" => format!(
            r#""name": "{item}", "state": "started", "enabled": true, "daemon_reload": false, "daemon_reexec": false, "scope": "system", "no_block": false, "force": null, "masked": null, "use": "auto", "pattern": null, "sleep": null, "arguments": "", "runlevel": "default""#
        ),
        "user" => format!(
            r#""name": "{item}", "state": "present", "system": true, "shell": "/usr/sbin/nologin", "home": "/srv/{item}", "create_home": true, "group": null, "groups": null, "append": false, "uid": null, "password": null, "update_password": "always", "remove": false, "force": false, "expires": null"#
        ),
        _ => format!(
            r#""_raw_params": "/usr/local/bin/manage {item}", "_uses_shell": false, "stdin_add_newline": true, "strip_empty_ends": true, "argv": null, "chdir": "/srv/app", "executable": null, "creates": null, "removes": null, "stdin": null, "expand_argument_vars": true"#
        ),
    };
    format!(r#""invocation": {{"module_args": {{{args}}}}}"#)
}

/// A host result (runner_on_ok, ...) up to the module's output inside `"res": {` (which
/// `event_at` completes): as many of AWX's blocks as fit in `target`.
#[allow(clippy::too_many_arguments)]
fn host_event(
    r: &mut Rng,
    target: usize,
    seq: u64,
    host: &str,
    task: &str,
    module: &str,
    play: &str,
    role: &str,
    created: &str,
) -> (String, String) {
    let changed = r.below(4) == 0;
    let event = if changed {
        "runner_on_ok"
    } else {
        *r.pick(&["runner_on_ok", "runner_item_on_ok", "runner_on_skipped"])
    };
    let counter = seq + 1;
    let id = 1_000_000 + seq;
    let hostid = 10 + r.below(HOSTS.len());
    let (uuid, parent) = (r.uuid(), r.uuid());
    let item = *r.pick(ITEMS);
    let mut out = format!(
        concat!(
            r#", "id": {id}, "event": "{event}", "counter": {counter}, "event_display": "Host OK", "event_level": 3, "#,
            r#""failed": false, "changed": {changed}, "uuid": "{uuid}", "parent_uuid": "{parent}", "#,
            r#""job": {job}, "host": {hostid}, "host_name": "{host}", "playbook": "site.yml", "play": {play}, "#,
            r#""task": {task}, "role": "{role}", "start_line": {l0}, "end_line": {l1}, "verbosity": 0, "#,
            r#""created": "{created}", "modified": "{created}""#
        ),
        id = id,
        event = event,
        counter = counter,
        changed = changed,
        uuid = uuid,
        parent = parent,
        job = JOB,
        hostid = hostid,
        host = host,
        play = js(play),
        task = js(task),
        role = role,
        l0 = counter * 3,
        l1 = counter * 3 + 2,
        created = created,
    );
    let data_head = format!(
        concat!(
            r#""event_data": {{"playbook": "site.yml", "playbook_uuid": "{pbuuid}", "play": {play}, "#,
            r#""play_uuid": "{playuuid}", "play_pattern": "all", "task": {task}, "task_uuid": "{parent}", "#,
            r#""task_action": "{module}", "resolved_action": "ansible.builtin.{module}", "#,
            r#""task_path": "/runner/project/roles/{role}/tasks/main.yml:{line}", "host": "{host}", "#,
            r#""remote_addr": "{host}", "duration": {duration}, "event_loop": null, "uuid": "{uuid}", "#,
            r#""res": {{"changed": {changed}, "_ansible_no_log": false, "rc": 0, "stderr": "", "stderr_lines": [], "#,
            r#""start": "{created}", "end": "{created}", "delta": "0:00:0{duration}""#
        ),
        created = created,
        pbuuid = r.uuid(),
        play = js(play),
        playuuid = r.uuid(),
        task = js(task),
        parent = parent,
        module = module,
        role = role,
        line = r.below(200) + 1,
        host = host,
        duration = r.below(5000) as f64 / 1000.0,
        uuid = uuid,
        changed = changed,
    );
    // The module output, the closing braces and the display line still to come.
    let reserve = r#", "stdout": "", "stdout_lines": []}}, "stdout": ""}"#.len() + 200;
    let mut data = data_head;
    let args = format!(", {}", module_args(module, item));
    if out.len() + data.len() + args.len() + reserve <= target {
        data.push_str(&args);
    }
    for block in [summary_fields(hostid, host), related(id, hostid)] {
        if out.len() + data.len() + block.len() + 2 + reserve <= target {
            out.push_str(", ");
            out.push_str(&block);
        }
    }
    out.push_str(", ");
    out.push_str(&data);
    let colour = if changed { "0;33mchanged" } else { "0;32mok" };
    (out, format!("\u{1b}[{colour}: [{host}]\u{1b}[0m"))
}

/// One line of a module's own output (what Ansible puts in `stdout` and `stdout_lines`).
fn output_line(r: &mut Rng) -> String {
    let item = *r.pick(ITEMS);
    let ver = format!("{}.{}.{}-{}", r.below(4) + 1, r.below(30), r.below(20), r.below(9) + 1);
    match r.below(6) {
        0 => (*r.pick(&["Reading package lists...", "Building dependency tree...", "Reading state information..."])).to_string(),
        1 => format!("Setting up {item} ({ver}) ..."),
        2 => format!("Unpacking {item} ({ver}) over ({}.{}.{}) ...", r.below(4) + 1, r.below(30), r.below(20)),
        3 => format!(
            "/dev/sda{} {}G {}G {}G {}% /srv/{item}",
            r.below(4) + 1,
            r.below(900) + 20,
            r.below(500) + 1,
            r.below(400) + 1,
            r.below(99) + 1
        ),
        4 => format!("  Applying {}.{:04}_{}... OK", r.pick(ROLES), r.below(300), item.replace('-', "_")),
        _ => format!(
            "Created symlink /etc/systemd/system/multi-user.target.wants/{item}.service -> /lib/systemd/system/{item}.service."
        ),
    }
}

/// One line of Ansible output for the stdout filler.
fn stdout_line(r: &mut Rng, host: &str) -> String {
    match r.below(5) {
        0 => format!("\u{1b}[0;32mok: [{host}] => (item={})\u{1b}[0m\r\n", r.pick(ITEMS)),
        1 => format!("\u{1b}[0;33mchanged: [{host}] => (item={})\u{1b}[0m\r\n", r.pick(ITEMS)),
        2 => format!("\u{1b}[0;32mok: [{}]\u{1b}[0m\r\n", r.pick(HOSTS)),
        3 => format!(
            "/dev/sda{} {}G {}G {}G {}% /srv/{}\r\n",
            r.below(4) + 1,
            r.below(900) + 20,
            r.below(500) + 1,
            r.below(400) + 1,
            r.below(99) + 1,
            r.pick(ITEMS)
        ),
        _ => format!(
            "Applying migration {:04}_{}... OK ({}.{:03}s)\r\n",
            r.below(300),
            r.pick(ITEMS).replace('-', "_"),
            r.below(3),
            r.below(1000)
        ),
    }
}

/// The text of event `seq`, with `"t"` = now.
pub fn event(seq: u64) -> String {
    event_at(seq, now_ns())
}

/// The text of event `seq` with `"t"` = `t_ns`: the drawn size (300..=2000 bytes), or
/// the size of the smallest task-start event (about 430 bytes) when that is more.
pub fn event_at(seq: u64, t_ns: u64) -> String {
    let mut r = Rng::new(seq + 1);
    let target = MIN_SIZE + r.below(MAX_SIZE - MIN_SIZE + 1);
    let host = *r.pick(HOSTS);
    let (task, module) = *r.pick(TASKS);
    let (play, role) = (*r.pick(PLAYS), *r.pick(ROLES));
    let created = iso8601(t_ns);
    let counter = seq + 1;
    let head = format!(r#"{{"t": {t_ns}, "seq": {seq}, "type": "job_event""#);
    if target < SMALL {
        // A task start: AWX's banner, then display lines up to the size.
        let fields = format!(
            r#", "event": "playbook_on_task_start", "counter": {counter}, "uuid": "{}", "created": "{created}", "event_data": {{"task": {}, "task_uuid": "{}", "play": {}, "role": "{role}"}}"#,
            r.uuid(),
            js(task),
            r.uuid(),
            js(play)
        );
        let banner = format!("\r\nTASK [{task}] ");
        let mut stdout = format!("{banner}{}\r\n", "*".repeat(80usize.saturating_sub(banner.len())));
        let fixed = head.len() + fields.len() + r#", "stdout": ""}"#.len();
        let mut len = fixed + js(&stdout).len() - 2;
        loop {
            let line = stdout_line(&mut r, host);
            let add = js(&line).len() - 2;
            if len + add > target {
                break;
            }
            stdout.push_str(&line);
            len += add;
        }
        stdout.extend(std::iter::repeat_n(' ', target.saturating_sub(len)));
        return format!("{head}{fields}, \"stdout\": {}}}", js(&stdout));
    }
    // A host result: the module's output twice, as Ansible reports it (`stdout` and
    // `stdout_lines`), up to the size; the display line padded to the exact size.
    let (fields, display) = host_event(&mut r, target, seq, host, task, module, play, role, &created);
    let fixed =
        head.len() + fields.len() + r#", "stdout": "", "stdout_lines": []}}, "stdout": ""}"#.len() + js(&display).len()
            - 2;
    let mut lines: Vec<String> = vec![];
    let mut len = fixed;
    loop {
        let line = output_line(&mut r);
        let esc = js(&line).len();
        // In "stdout": the line and a "\n" before it; in "stdout_lines": the literal and ", ".
        let add = if lines.is_empty() {
            esc - 2 + esc
        } else {
            esc + 2 + esc + 2
        };
        if len + add > target {
            break;
        }
        lines.push(line);
        len += add;
    }
    let display = format!("{display}{}", " ".repeat(target.saturating_sub(len)));
    let list: Vec<String> = lines.iter().map(|l| js(l)).collect();
    format!(
        "{head}{fields}, \"stdout\": {}, \"stdout_lines\": [{}]}}}}, \"stdout\": {}}}",
        js(&lines.join("\n")),
        list.join(", "),
        js(&display)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_of_the_drawn_size() {
        let mut sizes = vec![];
        for seq in 0..500 {
            let e = event_at(seq, 1_764_568_800_123_456_789);
            let v: serde_json::Value = serde_json::from_str(&e).unwrap();
            assert_eq!(v["seq"], seq);
            assert_eq!(v["type"], "job_event");
            assert_eq!(v["counter"], seq + 1);
            assert!(v["event_data"].is_object());
            assert!((MIN_SIZE..=MAX_SIZE).contains(&e.len()), "{} bytes: {e}", e.len());
            assert_eq!(
                crate::fanout::parse_payload(&e),
                Some((1_764_568_800_123_456_789, Some(seq)))
            );
            sizes.push(e.len());
        }
        let mean = sizes.iter().sum::<usize>() / sizes.len();
        assert!((1000..1300).contains(&mean), "mean {mean}");
        assert!(sizes.iter().any(|&s| s < 500) && sizes.iter().any(|&s| s > 1900));
    }

    #[test]
    fn same_seq_same_event() {
        assert_eq!(event_at(7, 1), event_at(7, 1));
        assert_ne!(event_at(7, 1), event_at(8, 1));
    }

    #[test]
    fn timestamps() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(iso8601(1_764_568_800_123_456_789), "2025-12-01T06:00:00.123456Z");
    }
}
