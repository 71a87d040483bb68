//! `publish --payload awx`: an AWX-like job-event stream. Each text is one JSON event of
//! 300–2,000 bytes (the size drawn per sequence number, uniformly) shaped like what AWX
//! sends to a job's `job_events-<id>` group: `{"type": "job_event", "event":
//! "runner_on_ok", "counter": n, "stdout": "...", "event_data": {...}, "uuid": ...,
//! "created": ...}`, with ANSI-coloured Ansible output in `stdout`, random UUIDs and
//! timings. Its first two keys are the benchmark's own, `"t"` (ns since the epoch, taken
//! when the text is made) and `"seq"`, so the clients read them without parsing the rest.
//! The same seq always gives the same event apart from `t` and `created`.

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

/// The text of event `seq` with `"t"` = `t_ns`; exactly the drawn size (300..=2000 bytes).
pub fn event_at(seq: u64, t_ns: u64) -> String {
    let mut r = Rng::new(seq + 1);
    let target = MIN_SIZE + r.below(MAX_SIZE - MIN_SIZE + 1);
    let host = *r.pick(HOSTS);
    let (task, module) = *r.pick(TASKS);
    let (play, role) = (*r.pick(PLAYS), *r.pick(ROLES));
    let created = iso8601(t_ns);
    let counter = seq + 1;
    let head = format!(r#"{{"t": {t_ns}, "seq": {seq}, "type": "job_event""#);
    let (event, fields) = if target < SMALL {
        let fields = format!(
            r#", "event": "playbook_on_task_start", "counter": {counter}, "uuid": "{}", "created": "{created}", "event_data": {{"task": {}, "task_uuid": "{}", "play": {}, "role": "{role}"}}"#,
            r.uuid(),
            js(task),
            r.uuid(),
            js(play)
        );
        ("playbook_on_task_start", fields)
    } else {
        let changed = r.below(4) == 0;
        let event = if changed {
            "runner_on_ok"
        } else {
            *r.pick(&["runner_on_ok", "runner_item_on_ok", "runner_on_skipped"])
        };
        let duration = r.below(5000) as f64 / 1000.0;
        let fields = format!(
            concat!(
                r#", "event": "{event}", "counter": {counter}, "event_display": "Host OK", "event_level": 3, "#,
                r#""failed": false, "changed": {changed}, "uuid": "{uuid}", "parent_uuid": "{parent}", "#,
                r#""host": {hostid}, "host_name": "{host}", "playbook": "site.yml", "play": {play}, "#,
                r#""task": {task}, "role": "{role}", "start_line": {l0}, "end_line": {l1}, "verbosity": 0, "#,
                r#""created": "{created}", "event_data": {{"playbook": "site.yml", "playbook_uuid": "{pbuuid}", "#,
                r#""play": {play}, "play_uuid": "{playuuid}", "play_pattern": "all", "task": {task}, "#,
                r#""task_uuid": "{parent}", "task_action": "{module}", "resolved_action": "ansible.builtin.{module}", "#,
                r#""task_path": "/runner/project/roles/{role}/tasks/main.yml:{line}", "host": "{host}", "#,
                r#""remote_addr": "{host}", "res": {{"changed": {changed}, "_ansible_no_log": false}}, "#,
                r#""duration": {duration}, "event_loop": null, "uuid": "{uuid}"}}"#
            ),
            event = event,
            counter = counter,
            changed = changed,
            uuid = r.uuid(),
            parent = r.uuid(),
            hostid = 10 + r.below(HOSTS.len()),
            host = host,
            play = js(play),
            task = js(task),
            role = role,
            l0 = counter * 3,
            l1 = counter * 3 + 2,
            created = created,
            pbuuid = r.uuid(),
            playuuid = r.uuid(),
            module = module,
            line = r.below(200) + 1,
            duration = duration,
        );
        (event, fields)
    };
    let _ = event;
    // `"stdout": "..."` is what grows the event to its size.
    let fixed = head.len() + fields.len() + r#", "stdout": ""}"#.len();
    let budget = target.saturating_sub(fixed);
    let mut stdout = String::with_capacity(budget);
    let mut escaped = 0;
    loop {
        let line = stdout_line(&mut r, host);
        let len = js(&line).len() - 2;
        if escaped + len > budget {
            break;
        }
        stdout.push_str(&line);
        escaped += len;
    }
    stdout.extend(std::iter::repeat_n(' ', budget - escaped));
    format!("{head}{fields}, \"stdout\": {}}}", js(&stdout))
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
        assert!(sizes.iter().any(|&s| s < 400) && sizes.iter().any(|&s| s > 1900));
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
