//! Local profile files: atomic writes and a retention cap.
//!
//! A window is written to `.<name>.tmp` in the output directory and renamed to
//! `<app>-<pid>-<window start unix ms>.pb.gz`, so readers never see a half-written file
//! and temporary files never match `*.pb.gz`. After each write the directory is trimmed
//! to the newest `max_files` files of this application, and to `max_bytes` in total
//! (the newest file always stays); every deletion is counted.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Counts of what the sink did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FileCounts {
    pub(crate) written: u64,
    pub(crate) bytes_written: u64,
    pub(crate) deleted: u64,
    pub(crate) write_errors: u64,
}

/// Writes windows as files into one directory.
#[derive(Debug)]
pub(crate) struct FileSink {
    dir: PathBuf,
    /// `<app with '/' as '_'>-`: the prefix of every file of this application.
    prefix: String,
    pid: u32,
    max_files: usize,
    max_bytes: u64,
    pub(crate) counts: FileCounts,
}

impl FileSink {
    /// Creates the directory if needed and checks that it is writable.
    pub(crate) fn new(
        dir: PathBuf,
        application_name: &str,
        max_files: usize,
        max_bytes: u64,
    ) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        let sink = Self {
            prefix: format!("{}-", application_name.replace('/', "_")),
            dir,
            pid: std::process::id(),
            max_files,
            max_bytes,
            counts: FileCounts::default(),
        };
        let probe = sink.dir.join(format!(".write-probe-{}.tmp", sink.pid));
        fs::write(&probe, b"")?;
        fs::remove_file(&probe)?;
        Ok(sink)
    }

    /// The file name of the window that started at `start`.
    pub(crate) fn file_name(&self, start: SystemTime) -> String {
        let ms = start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("{}{}-{ms}.pb.gz", self.prefix, self.pid)
    }

    /// The allocation profile's file name of the window that started at `start`:
    /// `<app>-<pid>-<ms>.alloc.pb.gz` (same retention as the CPU files).
    pub(crate) fn alloc_file_name(&self, start: SystemTime) -> String {
        let name = self.file_name(start);
        format!("{}.alloc.pb.gz", name.trim_end_matches(".pb.gz"))
    }

    /// Writes one window's allocation profile, then applies retention (as `write`).
    pub(crate) fn write_alloc(&mut self, start: SystemTime, gzipped: &[u8]) -> io::Result<PathBuf> {
        let name = self.alloc_file_name(start);
        self.write_as(name, gzipped)
    }

    /// Writes one window's gzipped pprof, then applies retention. Errors are counted and
    /// returned for the caller to log.
    pub(crate) fn write(&mut self, start: SystemTime, gzipped: &[u8]) -> io::Result<PathBuf> {
        let name = self.file_name(start);
        self.write_as(name, gzipped)
    }

    fn write_as(&mut self, name: String, gzipped: &[u8]) -> io::Result<PathBuf> {
        let result = self.write_atomically(name, gzipped);
        match &result {
            Ok(_) => {
                self.counts.written += 1;
                self.counts.bytes_written += gzipped.len() as u64;
            }
            Err(_) => self.counts.write_errors += 1,
        }
        self.enforce_retention()?;
        result
    }

    fn write_atomically(&self, name: String, gzipped: &[u8]) -> io::Result<PathBuf> {
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let written = (|| {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(gzipped)?;
            file.sync_data()?;
            fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written.map(|()| path)
    }

    /// Deletes the oldest files of this application beyond the caps.
    pub(crate) fn enforce_retention(&mut self) -> io::Result<()> {
        let mut files = self.own_files()?;
        // Oldest first: by window start, then by name for equal starts.
        files.sort_by(|a, b| (a.start_ms, &a.path).cmp(&(b.start_ms, &b.path)));
        let mut total: u64 = files.iter().map(|f| f.len).sum();
        let mut remaining = files.len();
        for file in &files {
            let over_count = remaining > self.max_files;
            let over_bytes = total > self.max_bytes && remaining > 1;
            if !over_count && !over_bytes {
                break;
            }
            match fs::remove_file(&file.path) {
                Ok(()) => self.counts.deleted += 1,
                // Another process of the same application may have deleted it first.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            total -= file.len;
            remaining -= 1;
        }
        Ok(())
    }

    fn own_files(&self) -> io::Result<Vec<OwnFile>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(start_ms) = parse_start_ms(name, &self.prefix) else {
                continue;
            };
            let len = match entry.metadata() {
                Ok(meta) if meta.is_file() => meta.len(),
                _ => continue,
            };
            files.push(OwnFile {
                path: entry.path(),
                start_ms,
                len,
            });
        }
        Ok(files)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

struct OwnFile {
    path: PathBuf,
    start_ms: u128,
    len: u64,
}

/// `<prefix><pid>-<ms>.pb.gz` (or `.alloc.pb.gz`) -> `ms`, or `None` for any other name.
fn parse_start_ms(name: &str, prefix: &str) -> Option<u128> {
    let rest = name.strip_prefix(prefix)?;
    let rest = rest
        .strip_suffix(".alloc.pb.gz")
        .or_else(|| rest.strip_suffix(".pb.gz"))?;
    let (pid, ms) = rest.split_once('-')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ms.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("span-profiler-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    fn count_pb_gz(dir: &Path) -> usize {
        fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .ends_with(".pb.gz")
            })
            .count()
    }

    #[test]
    fn file_names_follow_the_fixed_pattern() {
        let sink = FileSink::new(temp_dir("names"), "shop/checkout", 5, u64::MAX).unwrap();
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let name = sink.file_name(start);
        assert_eq!(
            name,
            format!("shop_checkout-{}-1700000000123.pb.gz", std::process::id())
        );
        assert_eq!(
            parse_start_ms(&name, "shop_checkout-"),
            Some(1_700_000_000_123)
        );
        assert_eq!(
            parse_start_ms(&format!(".{name}.tmp"), "shop_checkout-"),
            None
        );
        assert_eq!(
            parse_start_ms("shop_checkout-x-1.pb.gz", "shop_checkout-"),
            None
        );
    }

    #[test]
    fn allocation_files_sit_beside_cpu_files_under_the_same_retention() {
        let dir = temp_dir("alloc-names");
        let mut sink = FileSink::new(dir.clone(), "shop/checkout", 3, u64::MAX).unwrap();
        let start = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let name = sink.alloc_file_name(start);
        assert_eq!(
            name,
            format!(
                "shop_checkout-{}-1700000000123.alloc.pb.gz",
                std::process::id()
            )
        );
        assert_eq!(
            parse_start_ms(&name, "shop_checkout-"),
            Some(1_700_000_000_123)
        );
        for i in 0..3 {
            let t = start + Duration::from_secs(i);
            sink.write(t, b"cpu").unwrap();
            sink.write_alloc(t, b"alloc").unwrap();
        }
        assert_eq!(count_pb_gz(&dir), 3, "both kinds count toward max_files");
        assert_eq!(sink.counts.deleted, 3);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn retention_keeps_the_newest_files_and_counts_deletions() {
        let dir = temp_dir("retention");
        let mut sink = FileSink::new(dir.clone(), "app", 3, u64::MAX).unwrap();
        fs::write(dir.join("other-1-5.pb.gz"), b"not ours").unwrap();
        for i in 0..6u64 {
            sink.write(UNIX_EPOCH + Duration::from_millis(1000 + i), b"data")
                .unwrap();
            assert!(count_pb_gz(&dir) <= 4, "3 of ours + 1 foreign");
        }
        assert_eq!(sink.counts.written, 6);
        assert_eq!(sink.counts.deleted, 3);
        let pid = std::process::id();
        for i in 3..6 {
            assert!(dir.join(format!("app-{pid}-{}.pb.gz", 1000 + i)).exists());
        }
        assert!(
            dir.join("other-1-5.pb.gz").exists(),
            "other applications' files stay"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_byte_cap_deletes_oldest_but_keeps_the_newest() {
        let dir = temp_dir("bytes");
        let mut sink = FileSink::new(dir.clone(), "app", 100, 10).unwrap();
        sink.write(UNIX_EPOCH + Duration::from_millis(1), &[0; 8])
            .unwrap();
        sink.write(UNIX_EPOCH + Duration::from_millis(2), &[0; 8])
            .unwrap();
        assert_eq!(count_pb_gz(&dir), 1);
        sink.write(UNIX_EPOCH + Duration::from_millis(3), &[0; 50])
            .unwrap();
        assert_eq!(count_pb_gz(&dir), 1, "the newest stays even above the cap");
        assert_eq!(sink.counts.deleted, 2);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_an_error_not_a_panic() {
        let file = temp_dir("not-a-dir");
        fs::write(&file, b"x").unwrap();
        assert!(FileSink::new(file.clone(), "app", 3, u64::MAX).is_err());
        fs::remove_file(&file).unwrap();
    }
}
