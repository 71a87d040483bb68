//! `[[static]]`: the locations channelgate serves from disk itself, as nginx's
//! `location /static/ { alias ...; }` did. Validated once at start and by `channelgate check`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::values::duration;
use crate::config::{Errors, KeyPath};

/// One `[[static]]` location.
#[derive(Clone, Debug)]
pub struct Location {
    /// The URL prefix it serves, starting and ending with `/` ("/static/"). nginx: `location`.
    pub prefix: String,
    /// The directory the rest of the path is looked up in, canonical. nginx: `alias`.
    pub root: PathBuf,
    /// `Cache-Control: public, max-age=N` on its files; None sends none. nginx: `expires`.
    pub expires: Option<Duration>,
    /// Encodings whose precompressed siblings (`app.js.br`, `app.js.gz`, `app.js.zst`) are
    /// served to clients that accept them, in preference order. nginx: `gzip_static`,
    /// `brotli_static`.
    pub precompressed: Vec<Encoding>,
    /// The file served for a directory (`/static/docs/` -> `docs/index.html`). nginx: `index`.
    pub index: Option<String>,
    /// What a missing file gets. nginx: `try_files $uri @app` (`Upstream`) or `=404`.
    pub fallback: Fallback,
    /// Only reachable through `X-Accel-Redirect` from the app; clients get 404. nginx: `internal`.
    pub internal: bool,
    /// Whether symlinks that lead out of `root` are followed. nginx: `disable_symlinks`
    /// (`off` when true, `if_not_owner`-like refusal of escapes when false).
    pub follow_symlinks: bool,
}

/// A content coding of a precompressed sibling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Brotli,
    Gzip,
    Zstd,
}

impl Encoding {
    /// The `Content-Encoding` / `Accept-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
            Encoding::Zstd => "zstd",
        }
    }

    /// The file name suffix of a precompressed sibling.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Gzip => ".gz",
            Encoding::Zstd => ".zst",
        }
    }

    pub fn from_token(t: &str) -> Option<Encoding> {
        match t {
            "br" => Some(Encoding::Brotli),
            "gzip" => Some(Encoding::Gzip),
            "zstd" => Some(Encoding::Zstd),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    NotFound,
    Upstream,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RawStatic {
    prefix: Option<String>,
    root: Option<String>,
    expires: Option<String>,
    precompressed: Option<Vec<String>>,
    index: Option<String>,
    fallback: Option<String>,
    internal: Option<bool>,
    follow_symlinks: Option<bool>,
}

/// Validates every `[[static]]` entry; the roots must exist and be readable directories.
/// Each location comes with its index in the file, for errors found later (overlaps).
pub(crate) fn validate(
    raw: Vec<RawStatic>,
    path: &KeyPath,
    errs: &mut Errors,
) -> Vec<(usize, Location)> {
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.validate(&path.index(i), errs).map(|l| (i, l)))
        .collect()
}

impl RawStatic {
    fn validate(self, path: &KeyPath, errs: &mut Errors) -> Option<Location> {
        let prefix = match self.prefix {
            None => {
                errs.add(&path.key("prefix"), "required, e.g. \"/static/\"");
                None
            }
            Some(p) => match check_prefix(&p) {
                Ok(()) => Some(p),
                Err(e) => {
                    errs.add(&path.key("prefix"), e);
                    None
                }
            },
        };
        let root = match self.root {
            None => {
                errs.add(&path.key("root"), "required: the directory to serve");
                None
            }
            Some(r) => match check_root(&r) {
                Ok(p) => Some(p),
                Err(e) => {
                    errs.add(&path.key("root"), e);
                    // Kept (the configuration is refused anyway) so that the prefix is
                    // still checked for overlaps.
                    Some(PathBuf::from(r))
                }
            },
        };
        let expires = self
            .expires
            .map(|e| duration(Some(&e), Duration::ZERO, true, &path.key("expires"), errs));
        let mut precompressed = Vec::new();
        for (i, t) in self.precompressed.unwrap_or_default().iter().enumerate() {
            match Encoding::from_token(t) {
                Some(e) if precompressed.contains(&e) => errs.add(
                    &path.key("precompressed").index(i),
                    format!("`{t}` is listed twice"),
                ),
                Some(e) => precompressed.push(e),
                None => errs.add(
                    &path.key("precompressed").index(i),
                    format!(
                        "`{t}` is not a precompressed encoding; use \"br\", \"gzip\" or \"zstd\""
                    ),
                ),
            }
        }
        if let Some(i) = &self.index {
            if i.is_empty() || i.contains(['/', '\\', '\0']) || i.starts_with('.') {
                errs.add(
                    &path.key("index"),
                    format!("`{i}` must be a plain file name such as \"index.html\""),
                );
            }
        }
        let internal = self.internal.unwrap_or(false);
        let fallback = match self.fallback.as_deref() {
            None | Some("404") => Fallback::NotFound,
            Some("upstream") if internal => {
                errs.add(
                    &path.key("fallback"),
                    "an internal location answers only X-Accel-Redirect; a missing file is a 404",
                );
                Fallback::NotFound
            }
            Some("upstream") => Fallback::Upstream,
            Some(other) => {
                errs.add(
                    &path.key("fallback"),
                    format!("`{other}` is not a fallback; use \"404\" or \"upstream\""),
                );
                Fallback::NotFound
            }
        };
        Some(Location {
            prefix: prefix?,
            root: root?,
            expires,
            precompressed,
            index: self.index,
            fallback,
            internal,
            follow_symlinks: self.follow_symlinks.unwrap_or(false),
        })
    }
}

/// A prefix is a clean absolute path ending in `/`, of characters that need no escaping.
fn check_prefix(p: &str) -> Result<(), String> {
    if !p.starts_with('/') || !p.ends_with('/') {
        return Err(format!(
            "`{p}` must start and end with /, like \"/static/\""
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()+,;=:@".contains(c);
    if let Some(c) = p.chars().find(|c| !allowed(*c)) {
        return Err(format!(
            "`{p}`: `{c}` is not allowed in a prefix (write the path unescaped, without templates)"
        ));
    }
    let inner = p.get(1..p.len() - 1).unwrap_or("");
    let bad_segment = p != "/"
        && inner
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad_segment {
        return Err(format!("`{p}` has an empty, `.` or `..` segment"));
    }
    Ok(())
}

/// The canonical form of an existing, readable directory.
fn check_root(r: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(r);
    if !p.is_absolute() {
        return Err(format!("`{r}` must be an absolute path"));
    }
    let canonical = p
        .canonicalize()
        .map_err(|e| format!("`{r}` cannot be used: {e}"))?;
    if !canonical.is_dir() {
        return Err(format!("`{r}` is not a directory"));
    }
    std::fs::read_dir(&canonical).map_err(|e| format!("`{r}` is not readable: {e}"))?;
    Ok(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert!(check_prefix("/static/").is_ok());
        assert!(check_prefix("/a/b-c_d.e/").is_ok());
        assert!(check_prefix("/").is_ok());
        for bad in [
            "static/", "/static", "/a//b/", "/a/../b/", "/%2e/", "/{x}/", "/a b/",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roots() {
        let d = tempfile::tempdir().unwrap();
        assert!(check_root(d.path().to_str().unwrap()).is_ok());
        assert!(check_root("relative/dir").is_err());
        let missing = d.path().join("missing");
        assert!(check_root(missing.to_str().unwrap())
            .unwrap_err()
            .contains("cannot be used"));
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(check_root(file.to_str().unwrap())
            .unwrap_err()
            .contains("not a directory"));
    }
}
