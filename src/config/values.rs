//! Typed values shared by several config sections: durations, listen and server addresses.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use super::errors::{Errors, KeyPath};

/// Parses a duration such as "250ms", "5s", "1m 30s". Zero is refused unless `allow_zero`.
pub fn duration(
    raw: Option<&str>,
    default: Duration,
    allow_zero: bool,
    path: &KeyPath,
    errs: &mut Errors,
) -> Duration {
    let Some(raw) = raw else { return default };
    match humantime::parse_duration(raw.trim()) {
        Ok(d) if d.is_zero() && !allow_zero => {
            errs.add(path, "must be longer than zero");
            default
        }
        Ok(d) => d,
        Err(e) => {
            errs.add(
                path,
                format!(
                    "`{raw}` is not a duration ({e}); write it like \"250ms\", \"5s\" or \"2m\""
                ),
            );
            default
        }
    }
}

/// Formats a duration the way it is written in the config ("5s", "250ms").
pub fn show_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Where a listener or an upstream server is: a TCP address or a unix socket path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// How to read names in an address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Only literal IPs: listeners bind to exactly what is written.
    IpOnly,
    /// Host names are resolved once, at load (e.g. `localhost:8050`).
    Names,
}

/// Parses `"127.0.0.1:8000"`, `"[::1]:8000"` or `"unix:/run/app.sock"`.
pub fn address(raw: &str, resolve: Resolve, path: &KeyPath, errs: &mut Errors) -> Option<Address> {
    let raw = raw.trim();
    if let Some(p) = raw.strip_prefix("unix:") {
        if p.is_empty() || !p.starts_with('/') {
            errs.add(path, format!("`{raw}`: a unix socket needs an absolute path, like \"unix:/run/gunicorn.sock\""));
            return None;
        }
        return Some(Address::Unix(PathBuf::from(p)));
    }
    if let Ok(a) = raw.parse::<SocketAddr>() {
        if a.port() == 0 && resolve == Resolve::Names {
            errs.add(path, format!("`{raw}`: port 0 is not a server port"));
            return None;
        }
        return Some(Address::Tcp(a));
    }
    let hint =
        "write it as \"IP:PORT\" (\"127.0.0.1:8000\", \"[::1]:8000\") or \"unix:/path/to.sock\"";
    if resolve == Resolve::IpOnly || !raw.contains(':') {
        errs.add(path, format!("`{raw}` is not an address; {hint}"));
        return None;
    }
    match raw.to_socket_addrs().map(|mut it| it.next()) {
        Ok(Some(a)) => Some(Address::Tcp(a)),
        Ok(None) | Err(_) => {
            errs.add(
                path,
                format!("`{raw}`: cannot resolve this host name; {hint}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, resolve: Resolve) -> Result<Address, String> {
        let mut errs = Errors::new("");
        let a = address(raw, resolve, &KeyPath::root().key("x"), &mut errs);
        errs.into_result("t", ())
            .map_err(|e| e.errors[0].message.clone())?;
        Ok(a.unwrap())
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse("127.0.0.1:80", Resolve::IpOnly).unwrap().to_string(),
            "127.0.0.1:80"
        );
        assert_eq!(
            parse("[::1]:80", Resolve::IpOnly).unwrap().to_string(),
            "[::1]:80"
        );
        assert_eq!(
            parse("unix:/run/a.sock", Resolve::IpOnly)
                .unwrap()
                .to_string(),
            "unix:/run/a.sock"
        );
        assert!(parse("unix:relative.sock", Resolve::IpOnly).is_err());
        assert!(parse("localhost:80", Resolve::IpOnly).is_err());
        assert!(parse("localhost:80", Resolve::Names).is_ok());
        assert!(parse("8000", Resolve::Names)
            .unwrap_err()
            .contains("IP:PORT"));
    }

    #[test]
    fn durations() {
        let mut errs = Errors::new("");
        let p = KeyPath::root().key("d");
        let d = Duration::from_secs(9);
        assert_eq!(
            duration(Some("250ms"), d, false, &p, &mut errs),
            Duration::from_millis(250)
        );
        assert_eq!(
            duration(Some("1m 30s"), d, false, &p, &mut errs),
            Duration::from_secs(90)
        );
        assert_eq!(duration(None, d, false, &p, &mut errs), d);
        assert!(errs.is_empty());
        duration(Some("5"), d, false, &p, &mut errs);
        duration(Some("0s"), d, false, &p, &mut errs);
        assert_eq!(errs.into_result("t", ()).unwrap_err().errors.len(), 2);
    }
}
