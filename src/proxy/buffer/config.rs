//! The buffering keys: `[upstream] request_buffering`, `request_buffer_memory`,
//! `stream_uploads`, `response_buffering`, `response_buffer_memory`,
//! `response_buffer_max`, and `[server] temp_dir`, `max_body_size`.

use std::path::PathBuf;

use crate::config::{Errors, KeyPath};

/// `[upstream] request_buffering`, `request_buffer_memory`, `stream_uploads`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestBuffering {
    /// Read the whole body before connecting upstream. Default true (nginx
    /// `proxy_request_buffering on`).
    pub enabled: bool,
    /// Bytes of a body kept in memory; the rest goes to a temp file. Default 64KiB (nginx
    /// `client_body_buffer_size`).
    pub memory: usize,
    /// Path prefixes whose request bodies stream to the upstream as they arrive (uploads
    /// the app reads progressively). Default none (nginx `proxy_request_buffering off` in
    /// those locations).
    pub stream_uploads: Vec<String>,
}

impl RequestBuffering {
    /// Whether a request for `path` is buffered: on, and not under a `stream_uploads`
    /// prefix.
    pub fn applies_to(&self, path: &str) -> bool {
        self.enabled
            && !self
                .stream_uploads
                .iter()
                .any(|p| path.starts_with(p.as_str()))
    }
}

/// `[upstream] response_buffering`, `response_buffer_memory`, `response_buffer_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseBuffering {
    /// Read the response as fast as the upstream sends it. Default true (nginx
    /// `proxy_buffering on`).
    pub enabled: bool,
    /// Bytes per response kept in memory while the client is slower than the upstream.
    /// Default 256KiB (nginx `proxy_buffers`).
    pub memory: usize,
    /// Bytes per response held (memory and temp file); beyond, the rest streams at the
    /// client's pace. Default 1GiB (nginx `proxy_max_temp_file_size`).
    pub max: u64,
}

/// Where bodies go and how large a request body may be (`[server]` keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Directory of the temp files. Default the system temp dir (nginx
    /// `client_body_temp_path` / `proxy_temp_path`).
    pub temp_dir: PathBuf,
    /// Largest request body; 0 is unlimited. Default 100MiB (nginx
    /// `client_max_body_size`).
    pub max_body_size: u64,
}

pub const DEFAULT_MAX_BODY_SIZE: u64 = 100 << 20;

#[derive(Default)]
pub(crate) struct RawBuffering {
    pub request_buffering: Option<bool>,
    pub request_buffer_memory: Option<String>,
    pub stream_uploads: Option<Vec<String>>,
    pub response_buffering: Option<bool>,
    pub response_buffer_memory: Option<String>,
    pub response_buffer_max: Option<String>,
}

fn size(raw: Option<String>, default: u64, path: &KeyPath, key: &str, errs: &mut Errors) -> u64 {
    match raw.as_deref().map(crate::ws::config::parse_size) {
        None => default,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            errs.add(&path.key(key), e);
            default
        }
    }
}

impl RawBuffering {
    pub(crate) fn validate(
        self,
        path: &KeyPath,
        errs: &mut Errors,
    ) -> (RequestBuffering, ResponseBuffering) {
        let req_mem = size(
            self.request_buffer_memory,
            64 << 10,
            path,
            "request_buffer_memory",
            errs,
        );
        let resp_mem = size(
            self.response_buffer_memory,
            256 << 10,
            path,
            "response_buffer_memory",
            errs,
        );
        let resp_max = size(
            self.response_buffer_max,
            1 << 30,
            path,
            "response_buffer_max",
            errs,
        );
        if resp_max < resp_mem {
            errs.add(
                &path.key("response_buffer_max"),
                format!("must be at least response_buffer_memory ({resp_mem} bytes)"),
            );
        }
        let cap = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let stream_uploads = self.stream_uploads.unwrap_or_default();
        for (i, p) in stream_uploads.iter().enumerate() {
            if !p.starts_with('/') {
                errs.add(
                    &path.key("stream_uploads").index(i),
                    format!("`{p}` must be a path prefix starting with /"),
                );
            }
        }
        (
            RequestBuffering {
                enabled: self.request_buffering.unwrap_or(true),
                memory: cap(req_mem),
                stream_uploads,
            },
            ResponseBuffering {
                enabled: self.response_buffering.unwrap_or(true),
                memory: cap(resp_mem),
                max: resp_max,
            },
        )
    }
}

impl BodyLimits {
    pub(crate) fn validate(
        temp_dir: Option<String>,
        max_body_size: Option<String>,
        path: &KeyPath,
        errs: &mut Errors,
    ) -> BodyLimits {
        let temp_dir = temp_dir
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        if !temp_dir.is_dir() {
            errs.add(
                &path.key("temp_dir"),
                format!("{} is not a directory", temp_dir.display()),
            );
        }
        BodyLimits {
            temp_dir,
            max_body_size: size(
                max_body_size,
                DEFAULT_MAX_BODY_SIZE,
                path,
                "max_body_size",
                errs,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffering_keys_validate_with_their_names() {
        let mut errs = Errors::new("");
        let (rq, rs) = RawBuffering {
            request_buffer_memory: Some("8KiB".into()),
            response_buffer_memory: Some("2MiB".into()),
            response_buffer_max: Some("1MiB".into()),
            response_buffering: Some(false),
            ..RawBuffering::default()
        }
        .validate(&KeyPath::root().key("upstream"), &mut errs);
        assert!(rq.enabled && !rs.enabled);
        assert_eq!(rq.memory, 8 << 10);
        let all: Vec<String> = errs
            .into_errors("t")
            .errors
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all[0].contains("upstream.response_buffer_max"), "{all:?}");
        let mut errs = Errors::new("");
        let b = BodyLimits::validate(
            Some("/nonexistent-dir".into()),
            Some("lots".into()),
            &KeyPath::root().key("server"),
            &mut errs,
        );
        assert_eq!(b.max_body_size, DEFAULT_MAX_BODY_SIZE);
        assert_eq!(errs.into_errors("t").errors.len(), 2);
    }
}
