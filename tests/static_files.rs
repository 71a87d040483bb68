//! `[[static]]` locations, X-Accel-Redirect and `[compression]` end to end: real files on
//! disk, the real Django test app under gunicorn (its views in testapp/files_views.py, the
//! X-Accel-Redirect ones through django-sendfile2 as well), raw sockets for hostile paths
//! and Python's own decoders for compressed answers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{client, repo, tempdir, venv_bin, Bind, Channelgate, Gunicorn};

const SECRET: &[u8] = b"SECRET-MARKER-do-not-serve";

/// The files every test serves.
struct Tree {
    statics: PathBuf,
    protected: PathBuf,
    js: Vec<u8>,
    report: Vec<u8>,
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn tree(dir: &Path) -> Tree {
    let statics = dir.join("static");
    let protected = dir.join("protected");
    std::fs::create_dir_all(statics.join("docs")).unwrap();
    std::fs::create_dir_all(protected.join("nested")).unwrap();
    let js = b"console.log('channelgate');\n".repeat(200);
    std::fs::write(statics.join("app.js"), &js).unwrap();
    std::fs::write(statics.join("app.js.gz"), b"GZIP-VARIANT").unwrap();
    std::fs::write(statics.join("app.js.br"), b"BROTLI-VARIANT").unwrap();
    std::fs::write(statics.join("docs/index.html"), b"<h1>docs</h1>\n").unwrap();
    std::fs::write(statics.join("data.bin"), pattern(100_000, 7)).unwrap();
    std::fs::write(statics.join(".env"), SECRET).unwrap();
    std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
    std::os::unix::fs::symlink(dir.join("secret.txt"), statics.join("escape")).unwrap();
    let report = pattern(300_000, 3);
    std::fs::write(protected.join("report.tif"), &report).unwrap();
    std::fs::write(protected.join("nested/a b.txt"), b"spaced name\n").unwrap();
    Tree {
        statics,
        protected,
        js,
        report,
    }
}

fn start(dir: &Path, t: &Tree, extra: &str) -> (Gunicorn, Channelgate) {
    let app = Gunicorn::start_with_env(
        dir,
        "files",
        Bind::Tcp(common::free_port()),
        &[("TESTAPP_PROTECTED_ROOT", t.protected.display().to_string())],
    );
    let body = format!(
        "[upstream]\nservers = [\"{}\"]\n\n[[static]]\nprefix = \"/static/\"\nroot = \"{}\"\nexpires = \"30d\"\nprecompressed = [\"br\", \"gzip\"]\nindex = \"index.html\"\n\n[[static]]\nprefix = \"/protected/\"\nroot = \"{}\"\ninternal = true\n\n[[static]]\nprefix = \"/headers/files/\"\nroot = \"{}\"\nfallback = \"upstream\"\n{extra}",
        app.bind.config_addr(),
        t.statics.display(),
        t.protected.display(),
        t.statics.display(),
    );
    let cg = Channelgate::start(dir, "", &body);
    (app, cg)
}

/// One request over a fresh connection; (status, head, body).
fn raw(addr: &str, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(out.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, out[split..].to_vec())
}

fn get(cg: &Channelgate, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    let mut r = client().get(cg.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().expect("request")
}

fn header(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn static_files_answer_like_nginx() {
    let dir = tempdir();
    let t = tree(dir.path());
    let (_app, cg) = start(dir.path(), &t, "");

    let r = get(&cg, "/static/app.js", &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert_eq!(header(&r, "cache-control"), "public, max-age=2592000");
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(header(&r, "vary"), "Accept-Encoding");
    assert_eq!(header(&r, "content-length"), t.js.len().to_string());
    let etag = header(&r, "etag");
    let modified = header(&r, "last-modified");
    assert!(etag.starts_with('"') && !modified.is_empty());
    assert_eq!(r.bytes().unwrap().as_ref(), &t.js[..]);

    // HEAD: the same header, no body.
    let (status, head, body) = raw(
        &cg.addr(),
        b"HEAD /static/app.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(head
        .to_ascii_lowercase()
        .contains(&format!("content-length: {}", t.js.len())));
    assert!(body.is_empty());

    // Precompressed siblings, chosen by q-value; identity when none is accepted.
    let pick = |ae: &str| get(&cg, "/static/app.js", &[("accept-encoding", ae)]);
    let r = pick("gzip, br");
    assert_eq!(header(&r, "content-encoding"), "br");
    assert_eq!(r.bytes().unwrap().as_ref(), b"BROTLI-VARIANT");
    let r = pick("gzip;q=1, br;q=0.5");
    assert_eq!(header(&r, "content-encoding"), "gzip");
    assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(r.bytes().unwrap().as_ref(), b"GZIP-VARIANT");
    let r = pick("zstd, br;q=0");
    assert_eq!(header(&r, "content-encoding"), "");
    assert_eq!(r.bytes().unwrap().len(), t.js.len());

    // Conditional requests.
    assert_eq!(
        get(&cg, "/static/app.js", &[("if-none-match", &etag)]).status(),
        304
    );
    assert_eq!(
        get(&cg, "/static/app.js", &[("if-modified-since", &modified)]).status(),
        304
    );
    assert_eq!(
        get(&cg, "/static/app.js", &[("if-none-match", "\"other\"")]).status(),
        200
    );

    // Ranges.
    let data = pattern(100_000, 7);
    let r = get(&cg, "/static/data.bin", &[("range", "bytes=1000-1999")]);
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 1000-1999/100000");
    assert_eq!(r.bytes().unwrap().as_ref(), &data[1000..2000]);
    let r = get(&cg, "/static/data.bin", &[("range", "bytes=-10")]);
    assert_eq!(r.bytes().unwrap().as_ref(), &data[99_990..]);
    let r = get(&cg, "/static/data.bin", &[("range", "bytes=200000-")]);
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), "bytes */100000");
    let r = get(
        &cg,
        "/static/data.bin",
        &[("range", "bytes=0-9"), ("if-range", "\"stale\"")],
    );
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().len(), 100_000);

    // Methods, missing files, directories.
    let r = client()
        .post(cg.url("/static/app.js"))
        .body("x")
        .send()
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), "GET, HEAD");
    assert_eq!(get(&cg, "/static/missing.js", &[]).status(), 404);
    let r = get(&cg, "/static/docs/", &[]);
    assert_eq!(r.bytes().unwrap().as_ref(), b"<h1>docs</h1>\n");
    let (status, head, _) = raw(
        &cg.addr(),
        b"GET /static/docs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 301);
    assert!(
        head.to_ascii_lowercase()
            .contains("location: /static/docs/"),
        "{head}"
    );

    // fallback = "upstream": present files from disk, missing ones from the app.
    let r = get(&cg, "/headers/files/app.js", &[]);
    assert_eq!(r.bytes().unwrap().as_ref(), &t.js[..]);
    let r = get(&cg, "/headers/files/not-on-disk", &[]);
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    assert_eq!(v["path"], "/headers/files/not-on-disk");

    // An internal location is not there for clients, however the path is spelled.
    assert_eq!(get(&cg, "/protected/report.tif", &[]).status(), 404);
    assert_eq!(get(&cg, "/prot%65cted/report.tif", &[]).status(), 404);

    let m = |s: &str| cg.metric(s);
    assert!(m("channelgate_static_responses_total{location=\"/static/\",status=\"200\"}") >= 5.0);
    assert!(m("channelgate_static_responses_total{location=\"/static/\",status=\"304\"}") >= 2.0);
    assert_eq!(
        m("channelgate_static_responses_total{location=\"/protected/\",status=\"404\"}"),
        2.0
    );
    assert!(m("channelgate_static_sent_bytes_total{location=\"/static/\"}") >= 100_000.0);
    assert!(
        cg.proc.output().contains("location=/static/"),
        "access log names the location"
    );

    // `channelgate check` shows the locations.
    let out = Command::new(env!("CARGO_BIN_EXE_channelgate"))
        .args(["check", "--config"])
        .arg(&cg.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("static:      3 location(s)"), "{text}");
    assert!(
        text.contains("/protected/ ->") && text.contains("internal"),
        "{text}"
    );
}

#[test]
fn hostile_paths_over_raw_sockets_are_refused() {
    let dir = tempdir();
    let t = tree(dir.path());
    let (_app, cg) = start(dir.path(), &t, "");
    let attempts: &[&[u8]] = &[
        b"/static/../secret.txt",
        b"/static/%2e%2e/secret.txt",
        b"/static/%2E%2E/secret.txt",
        b"/static/..%2fsecret.txt",
        b"/static/%2e%2e%2fsecret.txt",
        b"/static/docs/../../secret.txt",
        b"/static/..\\secret.txt",
        b"/static/..%5csecret.txt",
        b"/static/app.js%00.png",
        b"/static/escape",
        b"/static/.env",
        b"/static/%2eenv",
        b"/static/docs/%2e%2e/.env",
        b"/st%61tic/..%2f..%2fsecret.txt",
        b"/static/%zz",
        b"http://x/static/../secret.txt",
        b"/protected/report.tif",
        b"/protected/../static/app.js",
    ];
    for path in attempts {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(path);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let (status, head, body) = raw(&cg.addr(), &req);
        let shown = String::from_utf8_lossy(path);
        assert!(
            status == 400 || status == 404,
            "{shown}: status {status}\n{head}"
        );
        assert!(
            !body.windows(SECRET.len()).any(|w| w == SECRET),
            "{shown} leaked the secret"
        );
    }
    // A NUL byte in the request line itself never reaches a file either.
    let (status, _, body) = raw(
        &cg.addr(),
        b"GET /static/app.js\0.png HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_ne!(status, 200);
    assert!(!body.windows(SECRET.len()).any(|w| w == SECRET));
    let refused = cg.metric("channelgate_static_refused_total{reason=\"bad_path\"}")
        + cg.metric("channelgate_static_refused_total{reason=\"hidden\"}");
    assert!(refused >= 12.0, "refusals counted: {refused}");
    // The server is still serving.
    assert_eq!(get(&cg, "/static/app.js", &[]).status(), 200);
}

#[test]
fn a_1gib_file_streams_with_flat_memory() {
    let dir = tempdir();
    let t = tree(dir.path());
    let big = t.statics.join("big.bin");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(1 << 30).unwrap();
    drop(f);
    let mut f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    std::io::Seek::seek(&mut f, std::io::SeekFrom::End(-16)).unwrap();
    f.write_all(b"END-OF-BIG-FILE!").unwrap();
    drop(f);
    let (_app, cg) = start(dir.path(), &t, "");
    assert_eq!(get(&cg, "/static/app.js", &[]).status(), 200);
    let before = cg.proc.peak_rss_kib();

    let mut s = TcpStream::connect(cg.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"GET /static/big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    let mut tail = Vec::new();
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > 64 {
            tail.drain(..tail.len() - 64);
        }
    }
    assert!(total > 1 << 30, "whole file received: {total}");
    assert!(tail.ends_with(b"END-OF-BIG-FILE!"));
    let after = cg.proc.peak_rss_kib();
    assert!(
        after < before + 32 * 1024,
        "peak RSS grew from {before} KiB to {after} KiB while sending 1 GiB"
    );
    let r = get(&cg, "/static/big.bin", &[("range", "bytes=-16")]);
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), b"END-OF-BIG-FILE!");
}

#[test]
fn x_accel_redirect_from_django_serves_internal_files() {
    let dir = tempdir();
    let t = tree(dir.path());
    let (_app, cg) = start(dir.path(), &t, "");

    let r = get(&cg, "/accel/report.tif", &[]);
    assert_eq!(r.status(), 200);
    assert_eq!(
        header(&r, "content-disposition"),
        "attachment; filename=\"report.tif\""
    );
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert_eq!(header(&r, "x-accel-redirect"), "");
    assert!(!header(&r, "etag").is_empty());
    assert_eq!(r.bytes().unwrap().as_ref(), &t.report[..]);

    let r = get(&cg, "/accel/report.tif", &[("range", "bytes=10-19")]);
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().unwrap().as_ref(), &t.report[10..20]);
    let r = get(&cg, "/accel/report.tif?expires=120", &[]);
    assert_eq!(header(&r, "cache-control"), "private, max-age=120");
    let r = get(&cg, "/accel/report.tif?deny=1", &[]);
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().unwrap(), "not yours\n");
    assert_eq!(get(&cg, "/accel/missing.bin", &[]).status(), 404);
    assert_eq!(get(&cg, "/accel-nowhere/", &[]).status(), 502);

    // django-sendfile2's nginx backend (it announces the file's length with an empty body).
    let r = get(&cg, "/sendfile/nested/a%20b.txt", &[]);
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-disposition").starts_with("attachment"));
    assert_eq!(r.bytes().unwrap().as_ref(), b"spaced name\n");
    let r = get(&cg, "/sendfile/report.tif", &[]);
    assert_eq!(r.bytes().unwrap().as_ref(), &t.report[..]);

    // The client connection stays usable after a replaced answer: two on one connection.
    let mut s = TcpStream::connect(cg.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let req = b"GET /accel/nested/a%20b.txt HTTP/1.1\r\nHost: x\r\n\r\n";
    for round in 0..2 {
        s.write_all(req).unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"spaced name\n") {
            let n = s.read(&mut byte).unwrap();
            assert!(
                n > 0,
                "connection closed in round {round}: {}",
                String::from_utf8_lossy(&got)
            );
            got.push(byte[0]);
        }
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }

    // A client asking the internal location directly gets nothing.
    assert_eq!(get(&cg, "/protected/report.tif", &[]).status(), 404);
    let m = |s: &str| cg.metric(s);
    assert!(m("channelgate_accel_redirects_total{outcome=\"served\"}") >= 7.0);
    assert_eq!(
        m("channelgate_accel_redirects_total{outcome=\"no_location\"}"),
        1.0
    );
    assert_eq!(
        m("channelgate_accel_redirects_total{outcome=\"missing\"}"),
        1.0
    );
    assert_eq!(
        m("channelgate_upstream_errors_total{kind=\"upstream_closed\"}"),
        0.0
    );
}

fn python(args: &[&str]) -> serde_json::Value {
    let out = Command::new(venv_bin("python"))
        .arg(repo().join("tests/peers/http_encoding.py"))
        .args(args)
        .output()
        .expect("run http_encoding.py");
    assert!(
        out.status.success(),
        "http_encoding.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from http_encoding.py")
}

#[test]
fn compressed_answers_decode_to_the_upstream_body() {
    let dir = tempdir();
    let t = tree(dir.path());
    let (app, cg) = start(dir.path(), &t, "\n[compression]\nenabled = true\n");
    let upstream = app.bind.config_addr();
    let compare = |path: &str, accept: &str| {
        python(&[
            "compare",
            "--proxy",
            &cg.addr(),
            "--upstream",
            &upstream,
            "--path",
            path,
            "--accept",
            accept,
        ])
    };
    for (accept, want) in [
        ("gzip", "gzip"),
        ("zstd", "zstd"),
        ("gzip, deflate, br, zstd", "zstd"),
        ("gzip, deflate, br", "br"),
        ("br;q=0.9, gzip;q=0.8", "br"),
        ("gzip;q=1.0, zstd;q=0.5", "gzip"),
        ("zstd;q=0, gzip", "gzip"),
    ] {
        let v = compare("/text/?bytes=100000", accept);
        assert_eq!(v["encoding"], want, "{accept}: {v}");
        assert_eq!(v["equal"], true, "{accept}: {v}");
        assert_eq!(v["plain_len"], 100_000);
        assert!(v["wire_len"].as_u64().unwrap() < 50_000, "{v}");
        assert_eq!(v["vary"], "Accept-Encoding");
    }
    for (path, accept) in [
        ("/text/?bytes=100000", "deflate"),
        ("/text/?bytes=100000", "identity"),
        ("/text/?bytes=500", "gzip"),
        ("/text/?bytes=100000&type=image/png", "gzip"),
        ("/download/?bytes=200000", "gzip"),
        ("/download/?bytes=200000&chunked=1", "zstd"),
    ] {
        let v = compare(path, accept);
        assert!(v["encoding"].is_null(), "{path} {accept}: {v}");
        assert_eq!(v["equal"], true, "{path} {accept}: {v}");
    }
    let m = |s: &str| cg.metric(s);
    assert!(m("channelgate_compressed_responses_total{encoding=\"zstd\"}") >= 2.0);
    let (i, o) = (
        m("channelgate_compression_in_bytes_total{encoding=\"gzip\"}"),
        m("channelgate_compression_out_bytes_total{encoding=\"gzip\"}"),
    );
    assert!(i >= 300_000.0 && o > 0.0 && o < i / 2.0, "in {i} out {o}");
    // Static files are never compressed per request.
    let r = get(&cg, "/static/data.bin", &[("accept-encoding", "gzip")]);
    assert_eq!(header(&r, "content-encoding"), "");
}

#[test]
fn compressed_streams_arrive_incrementally() {
    let dir = tempdir();
    let t = tree(dir.path());
    let (_app, cg) = start(
        dir.path(),
        &t,
        "\n[compression]\nenabled = true\nmin_size = \"0\"\n",
    );
    for accept in ["gzip", "zstd", "br"] {
        let acks = dir.path().join(format!("acks-{accept}"));
        std::fs::create_dir(&acks).unwrap();
        let path = format!("/stream-gated/?chunks=4&dir={}", acks.display());
        let v = python(&[
            "gated",
            "--proxy",
            &cg.addr(),
            "--path",
            &path,
            "--accept",
            accept,
            "--dir",
            acks.to_str().unwrap(),
        ]);
        assert_eq!(v["encoding"], accept, "{v}");
        assert_eq!(v["lines"], 4, "every line arrived: {v}");
        assert_eq!(
            v["acked"], 4,
            "each line arrived before the next was sent: {v}"
        );
    }
}

#[test]
fn check_refuses_bad_static_locations() {
    let dir = tempdir();
    let root = dir.path().join("static");
    std::fs::create_dir(&root).unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nservers = [\"127.0.0.1:1\"]\n[[ws]]\npath = \"/ws/{{room}}/\"\n\
             [[static]]\nprefix = \"/static/\"\nroot = \"{root}\"\nprecompressed = [\"lzma\"]\n\
             [[static]]\nprefix = \"/static/img/\"\nroot = \"{root}/missing\"\n\
             [[static]]\nprefix = \"/ws/\"\nroot = \"{root}\"\nfallback = \"app\"\nfollow_symlink = true\n\
             [compression]\nlevel = 12\n",
            root = root.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_channelgate"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    for needle in [
        "static[0].precompressed[0]",
        "static[1].root",
        "static[1].prefix: /static/img/ overlaps the [[static]] prefix /static/",
        "static[2].prefix: /ws/ overlaps the [[ws]] route",
        "static[2].fallback",
        "static[2].follow_symlink: unknown key; did you mean `follow_symlinks`?",
        "compression.level",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}
