//! From a request path to a file under a location's root, refusing everything that could
//! reach outside it: the path is percent-decoded once, strictly, before any check; escaped
//! slashes, backslashes and NUL, `.` and `..` segments and dotfiles are refused; symlinks
//! that lead out of the root are refused unless `follow_symlinks`; a directory is never
//! listed. The disk work is blocking and runs in one `spawn_blocking` call per request.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::config::{Encoding, Location};

/// Why a path gets no file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Malformed or hostile: bad escapes, escaped `/` `\` NUL, `.`/`..` segments. 400.
    BadPath,
    /// A dotfile, or a symlink leading out of the root. 404, like a missing file, so a
    /// client learns nothing of what exists.
    Hidden,
    /// Nothing there (or a directory without an index). 404, or the upstream.
    Missing,
    /// A directory asked for without its trailing slash while an index exists: 301.
    AddSlash,
}

/// Percent-decodes a URL path for routing: valid escapes decoded, anything else kept.
pub fn decode_lenient(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    match decode_with(raw, false) {
        Some(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
        None => Cow::Borrowed(raw),
    }
}

/// Percent-decodes a URL path strictly: a malformed escape, or an escaped `/`, `\` or NUL,
/// refuses the whole path.
pub fn decode_strict(raw: &str) -> Result<Vec<u8>, Refusal> {
    decode_with(raw, true).ok_or(Refusal::BadPath)
}

fn decode_with(raw: &str, strict: bool) -> Option<Vec<u8>> {
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            ) {
                (Some(h), Some(l)) => {
                    let byte = (h * 16 + l) as u8;
                    if strict && matches!(byte, b'/' | b'\\' | 0) {
                        return None;
                    }
                    out.push(byte);
                    i += 3;
                    continue;
                }
                _ if strict => return None,
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Some(out)
}

/// The path segments after `prefix` in a decoded path. Empty segments (`//`) are merged,
/// as nginx does; anything that could climb or hide is refused.
pub fn segments<'a>(decoded: &'a [u8], prefix: &str) -> Result<Vec<&'a [u8]>, Refusal> {
    let rest = decoded
        .strip_prefix(prefix.as_bytes())
        .ok_or(Refusal::Missing)?;
    let mut out = Vec::new();
    for seg in rest.split(|b| *b == b'/').filter(|s| !s.is_empty()) {
        if seg == b"." || seg == b".." || seg.iter().any(|b| matches!(b, b'\\' | 0)) {
            return Err(Refusal::BadPath);
        }
        if seg.starts_with(b".") {
            return Err(Refusal::Hidden);
        }
        out.push(seg);
    }
    Ok(out)
}

/// A file found under a location's root.
#[derive(Debug)]
pub struct Found {
    pub path: PathBuf,
    pub meta: Metadata,
    /// Precompressed siblings that exist, in the location's order of preference.
    pub variants: Vec<(Encoding, PathBuf, Metadata)>,
}

/// Finds the file for `segs` under `loc` (blocking). `dir_slash`: the request path ended
/// in `/`.
pub fn resolve(loc: &Location, segs: &[&[u8]], dir_slash: bool) -> Result<Found, Refusal> {
    let mut path = loc.root.clone();
    for s in segs {
        path.push(OsStr::from_bytes(s));
    }
    let (path, meta) = checked(loc, &path)?;
    let (path, meta) = if meta.is_dir() {
        let Some(index) = &loc.index else {
            return Err(Refusal::Missing);
        };
        if !dir_slash && !segs.is_empty() {
            return Err(Refusal::AddSlash);
        }
        checked(loc, &path.join(index))?
    } else if dir_slash {
        // "/static/app.js/": not a directory.
        return Err(Refusal::Missing);
    } else {
        (path, meta)
    };
    if !meta.is_file() {
        // FIFOs, sockets, devices: never opened.
        return Err(Refusal::Missing);
    }
    let mut variants = Vec::new();
    for e in &loc.precompressed {
        let mut name = path.clone().into_os_string();
        name.push(e.suffix());
        if let Ok((p, m)) = checked(loc, Path::new(&name)) {
            if m.is_file() {
                variants.push((*e, p, m));
            }
        }
    }
    Ok(Found {
        path,
        meta,
        variants,
    })
}

/// The metadata of `path`, after the symlink rule: without `follow_symlinks` the real path
/// must stay under the root and contain no dotfile.
fn checked(loc: &Location, path: &Path) -> Result<(PathBuf, Metadata), Refusal> {
    if loc.follow_symlinks {
        let meta = std::fs::metadata(path).map_err(|_| Refusal::Missing)?;
        return Ok((path.to_path_buf(), meta));
    }
    let real = path.canonicalize().map_err(|_| Refusal::Missing)?;
    let inside = real.strip_prefix(&loc.root).map_err(|_| Refusal::Hidden)?;
    let hidden = inside.components().any(|c| match c {
        Component::Normal(n) => n.as_bytes().starts_with(b"."),
        _ => true,
    });
    if hidden {
        return Err(Refusal::Hidden);
    }
    let meta = std::fs::metadata(&real).map_err(|_| Refusal::Missing)?;
    Ok((real, meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::config::Fallback;

    #[test]
    fn strict_decoding() {
        assert_eq!(decode_strict("/a%20b").unwrap(), b"/a b");
        for bad in ["/a%2fb", "/a%2F..", "/a%5cb", "/a%00", "/a%zz", "/a%2"] {
            assert_eq!(decode_strict(bad), Err(Refusal::BadPath), "{bad}");
        }
        assert_eq!(decode_lenient("/st%61tic/%zz"), "/static/%zz");
    }

    #[test]
    fn segment_rules() {
        assert_eq!(
            segments(b"/static/a//b.js", "/static/").unwrap(),
            vec![&b"a"[..], &b"b.js"[..]]
        );
        for (p, r) in [
            (&b"/static/../etc/passwd"[..], Refusal::BadPath),
            (b"/static/a/./b", Refusal::BadPath),
            (b"/static/a\\..\\b", Refusal::BadPath),
            (b"/static/a\0", Refusal::BadPath),
            (b"/static/.env", Refusal::Hidden),
            (b"/static/.git/config", Refusal::Hidden),
        ] {
            assert_eq!(
                segments(p, "/static/"),
                Err(r),
                "{}",
                String::from_utf8_lossy(p)
            );
        }
    }

    fn location(root: &Path, follow: bool) -> Location {
        Location {
            prefix: "/s/".into(),
            root: root.canonicalize().unwrap(),
            expires: None,
            precompressed: vec![Encoding::Brotli, Encoding::Gzip],
            index: Some("index.html".into()),
            fallback: Fallback::NotFound,
            internal: false,
            follow_symlinks: follow,
        }
    }

    #[test]
    fn resolution_on_disk() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"s").unwrap();
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/index.html"), b"i").unwrap();
        std::fs::write(root.join("app.js"), b"a").unwrap();
        std::fs::write(root.join("app.js.gz"), b"g").unwrap();
        std::fs::write(root.join(".hidden"), b"h").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink(root.join(".hidden"), root.join("tohidden")).unwrap();
        std::os::unix::fs::symlink(root.join("app.js"), root.join("alias.js")).unwrap();
        let loc = location(root, false);
        let f = resolve(&loc, &[b"app.js"], false).unwrap();
        assert_eq!(f.variants.len(), 1);
        assert_eq!(f.variants[0].0, Encoding::Gzip);
        assert!(resolve(&loc, &[b"alias.js"], false).is_ok());
        assert_eq!(
            resolve(&loc, &[b"escape"], false).unwrap_err(),
            Refusal::Hidden
        );
        assert_eq!(
            resolve(&loc, &[b"tohidden"], false).unwrap_err(),
            Refusal::Hidden
        );
        assert_eq!(
            resolve(&loc, &[b"nope"], false).unwrap_err(),
            Refusal::Missing
        );
        assert_eq!(
            resolve(&loc, &[b"docs"], false).unwrap_err(),
            Refusal::AddSlash
        );
        assert!(resolve(&loc, &[b"docs"], true)
            .unwrap()
            .path
            .ends_with("docs/index.html"));
        assert_eq!(
            resolve(&loc, &[b"app.js"], true).unwrap_err(),
            Refusal::Missing
        );
        let follow = location(root, true);
        assert!(resolve(&follow, &[b"escape"], false).is_ok());
        let mut no_index = location(root, false);
        no_index.index = None;
        assert_eq!(
            resolve(&no_index, &[b"docs"], true).unwrap_err(),
            Refusal::Missing
        );
        assert_eq!(resolve(&no_index, &[], true).unwrap_err(), Refusal::Missing);
    }
}
