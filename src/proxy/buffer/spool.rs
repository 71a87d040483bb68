//! Where buffered bodies wait: memory up to a limit, then a temp file that is removed as
//! soon as it is no longer needed (when dropped: after use, on client abort, on error).
//!
//! File reads and writes are synchronous: they hit the page cache, like nginx's temp
//! files, and a request or response only spills after its memory part is full.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use pingora_prometheus::prometheus::IntGauge;

/// A temp file `channelgate-<kind>-<random>` under the configured `temp_dir`, readable
/// by channelgate's user only, removed when dropped.
#[derive(Debug)]
pub struct TempFile {
    file: File,
    path: PathBuf,
    gauge: IntGauge,
}

impl TempFile {
    pub fn create(dir: &Path, kind: &str, gauge: &IntGauge) -> std::io::Result<TempFile> {
        loop {
            let path = dir.join(format!("channelgate-{kind}-{:016x}", rand::random::<u64>()));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => {
                    gauge.inc();
                    return Ok(TempFile {
                        file,
                        path,
                        gauge: gauge.clone(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove a temp file");
        }
        self.gauge.dec();
    }
}

/// Bytes written once and read back once, in order: memory first, then the file.
#[derive(Debug, Default)]
pub struct Spool {
    mem: BytesMut,
    file: Option<TempFile>,
    /// Bytes in the file, and bytes of it read back.
    written: u64,
    read: u64,
}

impl Spool {
    pub fn new() -> Spool {
        Spool::default()
    }

    pub fn len(&self) -> u64 {
        self.mem.len() as u64 + self.written - self.read
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn on_disk(&self) -> bool {
        self.file.is_some()
    }

    /// Appends `data`: to memory while it stays under `memory` bytes and nothing went to
    /// the file yet, else to a temp file made on first need by `make_file`.
    pub fn push(
        &mut self,
        data: &[u8],
        memory: usize,
        make_file: impl FnOnce() -> std::io::Result<TempFile>,
    ) -> std::io::Result<()> {
        if self.file.is_none() && self.mem.len() + data.len() <= memory {
            self.mem.extend_from_slice(data);
            return Ok(());
        }
        let f = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(make_file()?),
        };
        f.file.seek(SeekFrom::Start(self.written))?;
        f.file.write_all(data)?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// The next bytes in order, at most `max`; empty when the spool is empty. A drained
    /// file is removed at once.
    pub fn next_chunk(&mut self, max: usize) -> std::io::Result<Bytes> {
        if !self.mem.is_empty() {
            let n = self.mem.len().min(max);
            return Ok(self.mem.split_to(n).freeze());
        }
        let Some(f) = &mut self.file else {
            return Ok(Bytes::new());
        };
        let left = self.written - self.read;
        if left == 0 {
            self.file = None;
            self.written = 0;
            self.read = 0;
            return Ok(Bytes::new());
        }
        let n = (left.min(max as u64)) as usize;
        let mut chunk = vec![0u8; n];
        f.file.seek(SeekFrom::Start(self.read))?;
        f.file.read_exact(&mut chunk)?;
        self.read += n as u64;
        if self.read == self.written {
            self.file = None;
            self.written = 0;
            self.read = 0;
        }
        Ok(Bytes::from(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_then_file_then_removed() {
        let dir = tempfile::tempdir().unwrap();
        let gauge = IntGauge::new("t", "t").unwrap();
        let mut s = Spool::new();
        s.push(b"hello ", 8, || unreachable!()).unwrap();
        s.push(b"world!", 8, || {
            TempFile::create(dir.path(), "test", &gauge)
        })
        .unwrap();
        assert!(s.on_disk());
        assert_eq!(gauge.get(), 1);
        s.push(b" more", 8, || unreachable!()).unwrap();
        assert_eq!(s.len(), 17);
        let mut out = Vec::new();
        loop {
            let c = s.next_chunk(4).unwrap();
            if c.is_empty() {
                break;
            }
            out.extend_from_slice(&c);
        }
        assert_eq!(out, b"hello world! more");
        assert_eq!(gauge.get(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn dropping_a_spool_removes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let gauge = IntGauge::new("t", "t").unwrap();
        let mut s = Spool::new();
        s.push(&[1; 100], 10, || TempFile::create(dir.path(), "x", &gauge))
            .unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(s);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(gauge.get(), 0);
    }
}
