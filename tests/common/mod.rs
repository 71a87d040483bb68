//! Test fixture: starts channelgate and its real peers (gunicorn serving the Django app in
//! tests/django_app, a WebSocket server from tests/peers) on ephemeral ports, waits for
//! them to be ready, and stops them when dropped.
#![allow(dead_code)]

pub mod fleet;
pub mod rabbit;
pub mod ws;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The virtualenv made by `scripts/setup`.
pub fn venv_bin(tool: &str) -> PathBuf {
    let p = repo().join(".venv/bin").join(tool);
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup (the README's test command does it for you)",
        p.display()
    );
    p
}

/// A port nothing listens on right now, and never handed out before in this test
/// process: the kernel may offer a just-released port again, and two servers of one
/// test (or of two tests running in parallel) must not be given the same one.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `ready` until it holds or `limit` passes.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn accepts(addr: &str) -> bool {
    TcpStream::connect_timeout(
        &addr.parse::<SocketAddr>().expect("addr"),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A child process that is killed when dropped, with its output in a log file.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, dir: &Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        // Its own process group, so that stopping it also stops its children (gunicorn's
        // workers keep serving on the inherited socket when only the master dies).
        let child = std::os::unix::process::CommandExt::process_group(cmd, 0)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            child,
            log,
            name: name.to_string(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` to the process only.
    pub fn signal(&self, sig: &str) {
        self.kill_cmd(sig, self.pid().to_string());
    }

    /// Sends `sig` to the process and everything it started.
    pub fn signal_group(&self, sig: &str) {
        self.kill_cmd(sig, format!("-{}", self.pid()));
    }

    fn kill_cmd(&self, sig: &str, target: String) {
        let ok = Command::new("kill")
            .args([format!("-{sig}"), "--".to_string(), target])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {} failed", self.name);
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < limit,
                "{} did not exit within {limit:?}\n{}",
                self.name,
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Peak resident memory in KiB (VmHWM), while the process runs.
    pub fn peak_rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args([
                "-KILL".to_string(),
                "--".to_string(),
                format!("-{}", self.pid()),
            ])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.output()
            );
        }
    }
}

/// Where an upstream listens.
#[derive(Clone)]
pub enum Bind {
    Tcp(u16),
    Unix(PathBuf),
}

impl Bind {
    /// As written in channelgate's config.
    pub fn config_addr(&self) -> String {
        match self {
            Bind::Tcp(p) => format!("127.0.0.1:{p}"),
            Bind::Unix(p) => format!("unix:{}", p.display()),
        }
    }
}

/// gunicorn serving tests/django_app.
pub struct Gunicorn {
    pub proc: Proc,
    pub bind: Bind,
    pub name: String,
    /// While this file exists the app's /healthz answers 503.
    pub unhealthy_file: PathBuf,
}

impl Gunicorn {
    pub fn start(dir: &Path, name: &str, bind: Bind) -> Gunicorn {
        Self::start_with_env(dir, name, bind, &[])
    }

    /// With extra environment, e.g. CHANNELGATE_ADMIN for the views that publish.
    pub fn start_with_env(dir: &Path, name: &str, bind: Bind, env: &[(&str, String)]) -> Gunicorn {
        let workers = [
            "--worker-class",
            "gthread",
            "--threads",
            "8",
            "--workers",
            "1",
        ];
        Self::start_with_workers(dir, name, bind, env, &workers)
    }

    /// With `--workers n --worker-class sync`: one request at a time per worker, the
    /// setup gunicorn's documentation says needs a buffering proxy in front.
    pub fn start_sync(dir: &Path, name: &str, bind: Bind, workers: usize) -> Gunicorn {
        let n = workers.to_string();
        let args = ["--worker-class", "sync", "--workers", n.as_str()];
        Self::start_with_workers(dir, name, bind, &[], &args)
    }

    fn start_with_workers(
        dir: &Path,
        name: &str,
        bind: Bind,
        env: &[(&str, String)],
        workers: &[&str],
    ) -> Gunicorn {
        let db = dir.join("testapp.sqlite3");
        let app_dir = repo().join("tests/django_app");
        if !db.exists() {
            let out = Command::new(venv_bin("python"))
                .arg(app_dir.join("manage.py"))
                .arg("prepare")
                .env("TESTAPP_DB", &db)
                .output()
                .expect("run manage.py prepare");
            assert!(
                out.status.success(),
                "manage.py prepare failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let unhealthy_file = dir.join(format!("{name}.unhealthy"));
        let bind_arg = match &bind {
            Bind::Tcp(p) => format!("127.0.0.1:{p}"),
            Bind::Unix(p) => format!("unix:{}", p.display()),
        };
        let mut cmd = Command::new(venv_bin("gunicorn"));
        cmd.args(["--chdir"])
            .arg(&app_dir)
            .args(["--bind", &bind_arg])
            .args(workers)
            .args([
                "--graceful-timeout",
                "1",
                "--timeout",
                "120",
                "--no-control-socket",
            ])
            .arg("testapp.wsgi:application")
            .env("TESTAPP_DB", &db)
            .env("TESTAPP_NAME", name)
            .env("TESTAPP_UNHEALTHY_FILE", &unhealthy_file)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        let proc = Proc::spawn(&format!("gunicorn-{name}"), &mut cmd, dir);
        let g = Gunicorn {
            proc,
            bind,
            name: name.to_string(),
            unhealthy_file,
        };
        g.wait_ready();
        g
    }

    fn wait_ready(&self) {
        let bind = self.bind.clone();
        wait_for(
            &format!("gunicorn {}", self.name),
            Duration::from_secs(30),
            || match &bind {
                Bind::Tcp(p) => http_get_raw(&format!("127.0.0.1:{p}"), "/healthz").is_some(),
                Bind::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            },
        );
    }

    pub fn set_healthy(&self, healthy: bool) {
        if healthy {
            let _ = std::fs::remove_file(&self.unhealthy_file);
        } else {
            std::fs::write(&self.unhealthy_file, b"x").expect("write unhealthy file");
        }
    }
}

/// A minimal GET over a fresh TCP connection; the response text, or None if it failed.
pub fn http_get_raw(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A channelgate process started from a config text.
pub struct Channelgate {
    pub proc: Proc,
    pub port: u16,
    pub admin_port: u16,
    pub config: PathBuf,
}

impl Channelgate {
    /// `body` is the config without `[server] listen` and `[admin]`, which the fixture
    /// fills with ephemeral ports; `server_extra` goes into `[server]`.
    pub fn start(dir: &Path, server_extra: &str, body: &str) -> Channelgate {
        Self::start_on(dir, (free_port(), free_port()), server_extra, body)
    }

    /// On ports chosen beforehand (so that peers can be told the admin URL first).
    pub fn start_on(dir: &Path, ports: (u16, u16), server_extra: &str, body: &str) -> Channelgate {
        let (port, admin_port) = ports;
        let config = dir.join(format!("channelgate-{port}.toml"));
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:{port}\"]\nupgrade_sock = \"{dir}/upgrade-{port}.sock\"\npid_file = \"{dir}/cg-{port}.pid\"\n{server_extra}\n\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\n{body}\n",
            dir = dir.display()
        );
        std::fs::write(&config, text).expect("write config");
        Self::start_with(dir, config, port, admin_port, false)
    }

    pub fn start_with(
        dir: &Path,
        config: PathBuf,
        port: u16,
        admin_port: u16,
        upgrade: bool,
    ) -> Channelgate {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_channelgate"));
        cmd.arg("run").arg("--config").arg(&config);
        if upgrade {
            cmd.arg("--upgrade");
        }
        cmd.env("RUST_LOG", "info");
        let name = if upgrade {
            format!("channelgate-{port}-upgrade")
        } else {
            format!("channelgate-{port}")
        };
        let proc = Proc::spawn(&name, &mut cmd, dir);
        let cg = Channelgate {
            proc,
            port,
            admin_port,
            config,
        };
        if !upgrade {
            cg.wait_ready();
        }
        cg
    }

    pub fn wait_ready(&self) {
        let admin = format!("127.0.0.1:{}", self.admin_port);
        let listen = format!("127.0.0.1:{}", self.port);
        let start = Instant::now();
        while !(http_get_raw(&admin, "/healthz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
            && accepts(&listen))
        {
            let exited = std::process::Command::new("kill")
                .args(["-0", &self.proc.pid().to_string()])
                .stderr(Stdio::null())
                .status()
                .map(|s| !s.success())
                .unwrap_or(false);
            assert!(
                !exited,
                "channelgate exited before it was ready:\n{}",
                self.proc.output()
            );
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out after 20s waiting for channelgate listeners:\n{}",
                self.proc.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn admin(&self, path: &str) -> (u16, String) {
        let r = reqwest::blocking::get(format!("http://127.0.0.1:{}{path}", self.admin_port))
            .expect("admin request");
        let status = r.status().as_u16();
        (status, r.text().unwrap_or_default())
    }

    /// The value of one metric line (`name{labels}` exactly as exported), or 0.
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.admin("/metrics");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                l.rsplit_once(' ')
                    .filter(|(k, _)| *k == series)
                    .map(|(_, v)| v.parse().unwrap_or(0.0))
            })
            .unwrap_or(0.0)
    }
}

/// tests/peers/ws_echo_server.py on a fresh port (an app with its own WebSocket server),
/// once it is listening.
pub fn echo_server(dir: &Path) -> (Proc, u16) {
    let port = free_port();
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(repo().join("tests/peers/ws_echo_server.py"))
        .args(["--port", &port.to_string()]);
    let p = Proc::spawn("ws-echo", &mut cmd, dir);
    wait_for("echo server READY", Duration::from_secs(20), || {
        p.output().contains("READY")
    });
    (p, port)
}

/// A fresh temporary directory for one test's files.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("channelgate-test-")
        .tempdir()
        .expect("tempdir")
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client")
}

/// Whether RabbitMQ answers on 127.0.0.1:5672. Under CI its absence fails the test;
/// elsewhere the test is skipped with a loud message.
pub fn rabbitmq_available() -> bool {
    let up = TcpStream::connect_timeout(
        &"127.0.0.1:5672".parse().expect("addr"),
        Duration::from_secs(2),
    )
    .is_ok();
    if !up {
        assert!(
            std::env::var_os("CI").is_none(),
            "RabbitMQ is not reachable at 127.0.0.1:5672 and CI is set: broker tests must run (scripts/test starts RabbitMQ)"
        );
        eprintln!("\n********\n*** SKIPPED: RabbitMQ is not reachable at 127.0.0.1:5672; start it with `rabbitmq-server -detached` ***\n********\n");
    }
    up
}

/// A name no other test uses, for groups on the shared RabbitMQ.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}-{:x}", std::process::id(), rand_u32())
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    t ^ N.fetch_add(0x9e37_79b9, std::sync::atomic::Ordering::Relaxed)
}

/// Runs tests/peers/amqp_publish.py with `args`.
pub fn amqp_publish(args: &[&str]) {
    let out = Command::new(venv_bin("python"))
        .arg(repo().join("tests/peers/amqp_publish.py"))
        .args(args)
        .output()
        .expect("run amqp_publish.py");
    assert!(
        out.status.success(),
        "amqp_publish.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// channelgate with the RabbitMQ broker in front of `app`, one route `/ws/{g}/` joining
/// group `{g}` (plus `route_extra` keys), once the broker is connected.
pub fn start_amqp(dir: &Path, app: &Gunicorn, route_extra: &str) -> Channelgate {
    let body = format!(
        "[upstream]\nservers = [\"{}\"]\n[broker]\nkind = \"amqp\"\n\n[[ws]]\npath = \"/ws/{{g}}/\"\ngroups = [\"{{g}}\"]\n{route_extra}\n",
        app.bind.config_addr()
    );
    let cg = Channelgate::start(dir, "", &body);
    wait_for("broker connected", Duration::from_secs(20), || {
        cg.metric("channelgate_broker_up") == 1.0
    });
    cg
}

/// Logs `user` (password `<user>-pw`) in at `path` through channelgate; returns the Cookie
/// header value holding every cookie the app set (the session among them).
pub fn login(cg: &Channelgate, path: &str, user: &str) -> String {
    let r = client()
        .post(cg.url(path))
        .form(&[("username", user), ("password", &format!("{user}-pw"))])
        .send()
        .expect("login request");
    assert_eq!(r.status(), 200, "login as {user}");
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| c.to_str().ok()?.split(';').next().map(str::to_string))
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("sessionid=")),
        "{cookies:?}"
    );
    cookies.join("; ")
}

/// gunicorn serving the Django test app (told channelgate's admin URL, for the views that
/// publish) and channelgate in front of it with `routes` (`server_extra` goes into
/// `[server]`).
pub struct WithApp {
    pub dir: tempfile::TempDir,
    pub app: Gunicorn,
    pub cg: Channelgate,
}

pub fn with_app(server_extra: &str, routes: &str) -> WithApp {
    let dir = tempdir();
    let ports = (free_port(), free_port());
    let admin = format!("http://127.0.0.1:{}", ports.1);
    let app = Gunicorn::start_with_env(
        dir.path(),
        "app",
        Bind::Tcp(free_port()),
        &[("CHANNELGATE_ADMIN", admin)],
    );
    let body = format!(
        "[upstream]\nservers = [\"{}\"]\n\n{routes}",
        app.bind.config_addr()
    );
    let cg = Channelgate::start_on(dir.path(), ports, server_extra, &body);
    WithApp { dir, app, cg }
}

/// `POST /publish/{group}` on channelgate's admin listener: the status and JSON answer.
pub fn publish_with(
    http: &reqwest::blocking::Client,
    cg: &Channelgate,
    group: &str,
    body: &str,
    content_type: &str,
) -> (u16, serde_json::Value) {
    let r = http
        .post(format!(
            "http://127.0.0.1:{}/publish/{group}",
            cg.admin_port
        ))
        .header("content-type", content_type)
        .body(body.to_string())
        .send()
        .expect("publish request");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(serde_json::Value::Null))
}

/// The hex SHA-256 of `data` (by `sha256sum`, from coreutils).
pub fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(data)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
