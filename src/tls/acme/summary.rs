//! What `channelgate check` says about `[tls] acme`: the setup, and what state_dir holds
//! (read only; nothing is created and the CA is not contacted).

use std::fmt::Write;
use std::time::SystemTime;

use super::schedule;
use super::state::StateDir;
use super::AcmeConfig;

/// The `acme:` lines of `channelgate check`.
pub fn render(s: &AcmeConfig) -> String {
    let mut out = String::new();
    let state = StateDir::new(&s.state_dir, &s.directory, &s.domains);
    let _ = writeln!(
        out,
        "acme:        {} from {}",
        s.domains.join(", "),
        s.directory
    );
    let _ = writeln!(
        out,
        "  challenge: {} ({}), renewal {} before expiry",
        s.challenge.as_str(),
        match s.challenge {
            super::Challenge::TlsAlpn01 => "answered on the [tls] listeners",
            super::Challenge::Http01 => "answered on the [server] listeners",
        },
        humantime::format_duration(s.renew_before)
    );
    let _ = writeln!(
        out,
        "  email:     {}",
        s.email.as_deref().unwrap_or("(none)")
    );
    if let Some(ca) = &s.directory_ca {
        let _ = writeln!(out, "  directory_ca: {}", ca.display());
    }
    let _ = writeln!(out, "  state_dir: {}", s.state_dir.display());
    let account = match state.load_account() {
        Ok(Some(_)) => format!("registered ({})", state.account_path().display()),
        Ok(None) => "none yet: registered on first start".to_string(),
        Err(e) => format!("UNUSABLE, a new one will be registered: {e}"),
    };
    let _ = writeln!(out, "  account:   {account}");
    let cert = match state.load_certificate() {
        Ok(Some(c)) => {
            let now = SystemTime::now();
            let due = schedule::renew_at(c.not_before, c.not_after, s.renew_before);
            let when = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
            let status = if c.not_after <= now {
                "EXPIRED, renewed on start".to_string()
            } else if !c.covers(&s.domains) {
                "does not cover every domain, ordered again on start".to_string()
            } else if due <= now {
                "due, renewed on start".to_string()
            } else {
                format!("renewal at {}", when(due))
            };
            format!(
                "{} for {} (serial {}), expires {}; {status}",
                state.chain_path().display(),
                c.names.join(", "),
                c.serial,
                when(c.not_after)
            )
        }
        Ok(None) => "none yet: ordered on first start".to_string(),
        Err(e) => format!("UNUSABLE, ordered again on start: {e}"),
    };
    let _ = writeln!(out, "  certificate: {cert}");
    out
}
