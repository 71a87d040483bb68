//! Certificate reload without dropping anyone: SIGHUP (sent by `channelgate reload` through
//! `pid_file`, or by `systemctl reload`) re-reads the certificate files. New handshakes get
//! the new certificates; open connections and WebSockets keep theirs. A file that fails
//! keeps the previous certificate, is logged once per reload and counted in
//! `channelgate_tls_certificate_reloads_total{outcome="error"}`.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use super::certs::CertInfo;
use super::config::CertFiles;
use super::store::{CertStore, LoadReport};

/// Certificates closer than this to expiry are warned about (by `check` and on reload).
pub const WARN_BEFORE_SECS: i64 = 14 * 86400;

/// Reloads the certificate files on SIGHUP.
pub struct ReloadService {
    /// None when there is no `[tls]` section: SIGHUP is then acknowledged and ignored
    /// (instead of its default action, ending the process).
    pub store: Option<(CertStore, Vec<CertFiles>)>,
}

impl ReloadService {
    fn reload(&self) {
        let Some((store, files)) = &self.store else {
            tracing::info!("SIGHUP: no [tls] certificates to reload");
            return;
        };
        let reports = store.load_files(files);
        log_reports(&reports, "reloaded");
    }
}

/// Logs each entry's outcome once.
pub fn log_reports(reports: &[LoadReport], what: &str) {
    for r in reports {
        let cert = r.files.cert.display().to_string();
        match &r.result {
            Ok(info) => {
                let left = info.remaining();
                if left < WARN_BEFORE_SECS {
                    tracing::warn!(%cert, names = ?info.names, expires_in_days = left / 86400, "certificate {what}; it expires soon");
                } else {
                    tracing::info!(%cert, names = ?info.names, expires_in_days = left / 86400, "certificate {what}");
                }
            }
            Err(e) => {
                tracing::error!(%cert, error = %e, "certificate not reloaded; the previous one stays in use")
            }
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGHUP; certificate reload is off");
                return;
            }
        };
        loop {
            tokio::select! {
                r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
                s = hup.recv() => match s {
                    Some(()) => self.reload(),
                    None => return,
                },
            }
        }
    }
}

/// Why `channelgate reload` could not signal the running instance.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot read the pid file {}: {source} (is channelgate running?)", path.display())]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the pid file {} does not hold a process id", path.display())]
    BadPid { path: PathBuf },
    #[error("cannot signal process {pid}: {source}")]
    Kill {
        pid: i32,
        #[source]
        source: nix::Error,
    },
}

/// Sends SIGHUP to the process named in `pid_file`; returns its pid.
pub fn signal_running(pid_file: &Path) -> Result<i32, SignalError> {
    let text = std::fs::read_to_string(pid_file).map_err(|source| SignalError::PidFile {
        path: pid_file.to_path_buf(),
        source,
    })?;
    let pid: i32 =
        text.trim()
            .parse()
            .ok()
            .filter(|p| *p > 1)
            .ok_or_else(|| SignalError::BadPid {
                path: pid_file.to_path_buf(),
            })?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|source| SignalError::Kill { pid, source })?;
    Ok(pid)
}

/// What `check` says about one certificate entry: a line, and whether it is an error.
pub fn check_line(
    files: &CertFiles,
    result: &Result<CertInfo, super::certs::CertError>,
) -> (String, Severity) {
    let names = if files.names.is_empty() {
        String::new()
    } else {
        format!(" for {}", files.names.join(", "))
    };
    match result {
        Err(e) => (format!("error: {e}"), Severity::Error),
        Ok(info) => {
            let left = info.remaining();
            let when = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(info.not_after.max(0) as u64),
            );
            let base = format!(
                "{}{names}: names {}; expires {when}",
                files.cert.display(),
                info.names.join(", "),
            );
            if left <= 0 {
                (format!("error: {base} (EXPIRED)"), Severity::Error)
            } else if left < WARN_BEFORE_SECS {
                (
                    format!("warning: {base} (in {} days)", left / 86400),
                    Severity::Warning,
                )
            } else {
                (format!("{base} (in {} days)", left / 86400), Severity::Ok)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Ok,
    Warning,
    Error,
}
