//! `state_dir`: what the ACME client keeps between runs, shared safely by instances.
//!
//! ```text
//! state_dir/                                  0700
//!   <directory>/                              one per ACME server, e.g. acme-v02.api.letsencrypt.org_directory
//!     account.json                            0600  the ACME account (its private key and URL)
//!     <first domain>/
//!       fullchain.pem                         0600  the certificate chain, leaf first
//!       privkey.pem                           0600  its private key (PKCS#8)
//!       lock                                        held (flock) by the instance that is ordering
//! ```
//! Files are written to a temporary name and renamed, so a reader sees the old or the new
//! file, never half of one; a reader that sees a new key beside an old chain finds that
//! they do not match and looks again later.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;

use super::cert::{CertError, Issued};

/// Why state_dir could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not an ACME account file: {source}")]
    Account {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Certificate {
        path: PathBuf,
        #[source]
        source: CertError,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of one ACME setup (directory URL + domain list) in state_dir.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
    account_dir: PathBuf,
    cert_dir: PathBuf,
}

/// Turns a URL or a name into one safe path component.
fn slug(s: &str) -> String {
    let s = s.split_once("://").map(|(_, rest)| rest).unwrap_or(s);
    let out: String = s
        .trim_matches('/')
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    match out.as_str() {
        "" | "." | ".." => "_".to_string(),
        _ => out,
    }
}

impl StateDir {
    /// `domains` is not empty (config validation).
    pub fn new(root: &Path, directory: &str, domains: &[String]) -> StateDir {
        let account_dir = root.join(slug(directory));
        let first = domains.first().map(String::as_str).unwrap_or("_");
        let cert_dir = account_dir.join(slug(first));
        StateDir {
            root: root.to_path_buf(),
            account_dir,
            cert_dir,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn account_path(&self) -> PathBuf {
        self.account_dir.join("account.json")
    }
    pub fn chain_path(&self) -> PathBuf {
        self.cert_dir.join("fullchain.pem")
    }
    pub fn key_path(&self) -> PathBuf {
        self.cert_dir.join("privkey.pem")
    }
    fn lock_path(&self) -> PathBuf {
        self.cert_dir.join("lock")
    }

    /// Creates the directories, 0700 (and tightens an existing state_dir to 0700).
    pub fn ensure(&self) -> Result<(), StateError> {
        for dir in [&self.root, &self.account_dir, &self.cert_dir] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io_err(dir))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
        }
        Ok(())
    }

    /// Takes the ordering lock without waiting: `None` when another instance holds it.
    /// The lock is released when the returned file is dropped (or the process dies).
    pub fn try_lock(&self) -> Result<Option<File>, StateError> {
        let path = self.lock_path();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(io_err(&path)(e)),
        }
    }

    pub fn load_account(&self) -> Result<Option<AccountCredentials>, StateError> {
        let path = self.account_path();
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Account { path, source })
    }

    pub fn save_account(&self, credentials: &AccountCredentials) -> Result<(), StateError> {
        let path = self.account_path();
        let text =
            serde_json::to_vec_pretty(credentials).map_err(|source| StateError::Account {
                path: path.clone(),
                source,
            })?;
        write_private(&path, &text)
    }

    /// Moves a rejected account aside (kept for the operator as `account.json.rejected`);
    /// the next order registers a new one.
    pub fn forget_account(&self) -> Result<(), StateError> {
        let path = self.account_path();
        match fs::rename(&path, path.with_extension("json.rejected")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(e)),
            _ => Ok(()),
        }
    }

    /// The stored certificate, if both files are there.
    pub fn load_certificate(&self) -> Result<Option<Issued>, StateError> {
        let (chain_path, key_path) = (self.chain_path(), self.key_path());
        let (Some(chain), Some(key)) = (read_optional(&chain_path)?, read_optional(&key_path)?)
        else {
            return Ok(None);
        };
        Issued::from_pem(&chain, &key)
            .map(Some)
            .map_err(|source| StateError::Certificate {
                path: chain_path,
                source,
            })
    }

    pub fn save_certificate(&self, chain_pem: &str, key_pem: &str) -> Result<(), StateError> {
        write_private(&self.key_path(), key_pem.as_bytes())?;
        write_private(&self.chain_path(), chain_pem.as_bytes())
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, StateError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Writes `bytes` to `path` with mode 0600: to a temporary file beside it, synced, renamed.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_single_safe_components() {
        assert_eq!(
            slug("https://acme-v02.api.letsencrypt.org/directory"),
            "acme-v02.api.letsencrypt.org_directory"
        );
        assert_eq!(slug("https://127.0.0.1:14000/dir"), "127.0.0.1_14000_dir");
        assert_eq!(slug("*.Example.org"), "_.example.org");
        assert_eq!(slug(".."), "_");
        assert_eq!(slug("../../etc"), ".._.._etc");
    }

    #[test]
    fn files_are_private_and_the_lock_is_exclusive() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("state");
        let state = StateDir::new(&root, "https://ca.test/dir", &["a.example".into()]);
        state.ensure().expect("ensure");
        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert!(state.load_certificate().expect("empty").is_none());

        let params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).expect("params");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        state
            .save_certificate(&cert.pem(), &key.serialize_pem())
            .expect("save");
        assert_eq!(mode(&state.key_path()), 0o600);
        assert_eq!(mode(&state.chain_path()), 0o600);
        let loaded = state.load_certificate().expect("load").expect("present");
        assert_eq!(loaded.names, ["a.example"]);

        let held = state.try_lock().expect("lock").expect("free");
        assert!(state.try_lock().expect("lock").is_none(), "second holder");
        drop(held);
        assert!(state.try_lock().expect("lock").is_some());
    }
}
