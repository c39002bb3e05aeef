//! Local profile files: atomic writes and a retention cap.
//!
//! A window is written to `.<name>.tmp` in the output directory and renamed to
//! `<app>-<pid>-<window start unix ms>.pb.gz`, so readers never see a half-written file
//! and temporary files never match `*.pb.gz`. After each write the directory is trimmed
//! to the newest `max_files` files of this application, and to `max_bytes` in total
//! (the newest file always stays); every deletion is counted.
//!
//! In a real environment the directory can vanish (tmp cleaners) and the disk can fill:
//! a vanished directory is re-created (at most once per write, counted); a write that
//! fails with `ENOSPC` deletes this application's oldest profile files, one at a time,
//! and tries again (the file being written is always the newest; other applications'
//! files are never touched), counting each eviction. Temporary files left by a process
//! of this application that died mid-write (`kill -9`) are removed at start.
//!
//! Every file name comes from [`file_stem`], the one sanitiser of application names.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest file name most file systems take (ext4, xfs, tmpfs, btrfs), in bytes.
const MAX_FILE_NAME_BYTES: usize = 255;

/// Bytes of a file name besides the stem, at most: `.` + stem + `-<pid>-<ms>.alloc.pb.gz` +
/// `.tmp` with a 10-digit pid and a 20-digit millisecond count.
const NAME_OVERHEAD_BYTES: usize = 1 + 1 + 10 + 1 + 20 + ".alloc.pb.gz".len() + ".tmp".len();

/// The part of every file name that comes from the application name: `/`, NUL, other
/// control characters and a leading `.` (hidden files, and the temporary-file pattern)
/// replaced by `_`, cut on a UTF-8 boundary so that the longest name made from it (the
/// temporary file, with the pid and the window time kept) fits in 255 bytes.
pub(crate) fn file_stem(application_name: &str) -> String {
    let mut stem: String = application_name
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if c == '/' || c.is_control() || (i == 0 && c == '.') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let max = MAX_FILE_NAME_BYTES - NAME_OVERHEAD_BYTES;
    if stem.len() > max {
        let mut cut = max;
        while !stem.is_char_boundary(cut) {
            cut -= 1;
        }
        stem.truncate(cut);
    }
    if stem.is_empty() {
        stem.push('_');
    }
    stem
}

/// Counts of what the sink did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FileCounts {
    pub(crate) written: u64,
    pub(crate) bytes_written: u64,
    pub(crate) deleted: u64,
    pub(crate) write_errors: u64,
    /// Times the output directory had vanished and was created again.
    pub(crate) dir_recreated: u64,
    /// Old files deleted to make room after a write failed with `ENOSPC`.
    pub(crate) evicted_for_space: u64,
}

/// How a file's bytes reach the disk: the real write, or (in tests) one that fails
/// like a full disk.
type WriteFn = Box<dyn FnMut(&Path, &[u8]) -> io::Result<()> + Send>;

fn write_and_sync(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

/// Writes windows as files into one directory.
pub(crate) struct FileSink {
    dir: PathBuf,
    /// `<file_stem(app)>-`: the prefix of every file of this application.
    prefix: String,
    pid: u32,
    max_files: usize,
    max_bytes: u64,
    pub(crate) counts: FileCounts,
    write_file: WriteFn,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("dir", &self.dir)
            .field("prefix", &self.prefix)
            .field("counts", &self.counts)
            .finish_non_exhaustive()
    }
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
            prefix: format!("{}-", file_stem(application_name)),
            dir,
            pid: std::process::id(),
            max_files,
            max_bytes,
            counts: FileCounts::default(),
            write_file: Box::new(write_and_sync),
        };
        let probe = sink.dir.join(format!(".write-probe-{}.tmp", sink.pid));
        fs::write(&probe, b"")?;
        fs::remove_file(&probe)?;
        sink.remove_stale_temporaries();
        Ok(sink)
    }

    /// Replaces how bytes are written (tests inject a full disk).
    #[cfg(test)]
    fn with_write_fn(mut self, write_file: WriteFn) -> Self {
        self.write_file = write_file;
        self
    }

    /// Deletes `.<prefix><pid>-<ms>.pb.gz.tmp` files of processes of this application
    /// that no longer run (killed mid-write): never complete, never read.
    fn remove_stale_temporaries(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let Some(inner) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
                continue;
            };
            let Some(pid) = parse_pid(inner, &self.prefix) else {
                continue;
            };
            if pid != self.pid && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_file(entry.path());
            }
        }
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

    fn write_atomically(&mut self, name: String, gzipped: &[u8]) -> io::Result<PathBuf> {
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut recreated = false;
        loop {
            let written = (self.write_file)(&tmp, gzipped).and_then(|()| fs::rename(&tmp, &path));
            let Err(err) = written else {
                return Ok(path);
            };
            let _ = fs::remove_file(&tmp);
            if err.kind() == io::ErrorKind::NotFound && !recreated && !self.dir.exists() {
                // Deleted under us (a tmp cleaner): create it again, once per write.
                fs::create_dir_all(&self.dir)?;
                recreated = true;
                self.counts.dir_recreated += 1;
                continue;
            }
            if err.raw_os_error() == Some(libc::ENOSPC) && self.evict_oldest()? {
                continue;
            }
            return Err(err);
        }
    }

    /// Deletes this application's oldest profile file to make room; false when none is
    /// left to delete.
    fn evict_oldest(&mut self) -> io::Result<bool> {
        let files = self.own_files()?;
        let Some(oldest) = files
            .iter()
            .min_by(|a, b| (a.start_ms, &a.path).cmp(&(b.start_ms, &b.path)))
        else {
            return Ok(false);
        };
        match fs::remove_file(&oldest.path) {
            Ok(()) => {
                self.counts.evicted_for_space += 1;
                Ok(true)
            }
            // Gone already (another process of the application): try again.
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(err) => Err(err),
        }
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

/// `<prefix><pid>-<ms>.pb.gz` -> `pid`, or `None` for any other name.
fn parse_pid(name: &str, prefix: &str) -> Option<u32> {
    parse_start_ms(name, prefix)?;
    let rest = name.strip_prefix(prefix)?;
    rest.split_once('-')?.0.parse().ok()
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
    fn file_names_hold_any_application_name_within_255_bytes_keeping_pid_and_time() {
        assert_eq!(file_stem("unknown_service:demo"), "unknown_service:demo");
        assert_eq!(file_stem("a/b\0c\nd"), "a_b_c_d");
        assert_eq!(file_stem(".hidden"), "_hidden");
        assert_eq!(file_stem(""), "_");
        let long = "é".repeat(300);
        let dir = temp_dir("long-name");
        let mut sink = FileSink::new(dir.clone(), &long, 5, u64::MAX).unwrap();
        let start = UNIX_EPOCH + Duration::from_millis(u64::MAX);
        let path = sink.write(start, b"data").unwrap();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        assert!(format!(".{name}.tmp").len() <= 255, "{}", name.len());
        assert!(name.ends_with(&format!("-{}-{}.pb.gz", std::process::id(), u64::MAX)));
        assert!(name.starts_with("éé"), "cut on a character boundary");
        assert_eq!(sink.counts.written, 1);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_vanished_directory_is_created_again_and_counted() {
        let dir = temp_dir("vanished");
        let mut sink = FileSink::new(dir.clone(), "app", 5, u64::MAX).unwrap();
        sink.write(UNIX_EPOCH + Duration::from_millis(1), b"one")
            .unwrap();
        fs::remove_dir_all(&dir).unwrap();
        sink.write(UNIX_EPOCH + Duration::from_millis(2), b"two")
            .unwrap();
        assert_eq!(count_pb_gz(&dir), 1);
        assert_eq!(sink.counts.dir_recreated, 1);
        assert_eq!((sink.counts.written, sink.counts.write_errors), (2, 0));
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A disk of `capacity` bytes: a write that would exceed what the directory's
    /// files already use fails with `ENOSPC`, as a full file system does.
    fn small_disk(dir: PathBuf, capacity: u64) -> WriteFn {
        Box::new(move |path, bytes| {
            let used: u64 = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            if used + bytes.len() as u64 > capacity {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            write_and_sync(path, bytes)
        })
    }

    #[test]
    fn a_full_disk_evicts_the_oldest_profiles_so_the_newest_windows_are_kept() {
        let dir = temp_dir("enospc");
        // Room for 3 files of 100 bytes; a foreign file takes 50 and must stay.
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("other-1-5.pb.gz"), [0u8; 50]).unwrap();
        let mut sink = FileSink::new(dir.clone(), "app", 100, u64::MAX)
            .unwrap()
            .with_write_fn(small_disk(dir.clone(), 350));
        for i in 0..6u64 {
            sink.write(UNIX_EPOCH + Duration::from_millis(1000 + i), &[1; 100])
                .unwrap();
        }
        let pid = std::process::id();
        for i in 3..6 {
            assert!(
                dir.join(format!("app-{pid}-{}.pb.gz", 1000 + i)).exists(),
                "{i}"
            );
        }
        for i in 0..3 {
            assert!(
                !dir.join(format!("app-{pid}-{}.pb.gz", 1000 + i)).exists(),
                "{i}"
            );
        }
        assert!(
            dir.join("other-1-5.pb.gz").exists(),
            "other applications' files stay"
        );
        assert_eq!(sink.counts.evicted_for_space, 3);
        assert_eq!((sink.counts.written, sink.counts.write_errors), (6, 0));

        // A window larger than the whole disk: everything of ours is evicted, then the
        // write fails and is counted.
        let err = sink
            .write(UNIX_EPOCH + Duration::from_millis(2000), &[1; 1000])
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(sink.counts.write_errors, 1);
        assert_eq!(sink.counts.evicted_for_space, 6);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn temporaries_of_dead_processes_of_this_application_are_removed_at_start() {
        let dir = temp_dir("stale-tmp");
        fs::create_dir_all(&dir).unwrap();
        // pid 4194304 is above Linux's largest pid, so it never runs.
        let dead = dir.join(".app-4194304-1.pb.gz.tmp");
        let foreign = dir.join(".other-4194304-1.pb.gz.tmp");
        fs::write(&dead, b"half").unwrap();
        fs::write(&foreign, b"half").unwrap();
        let _sink = FileSink::new(dir.clone(), "app", 5, u64::MAX).unwrap();
        assert!(!dead.exists());
        assert!(foreign.exists());
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
