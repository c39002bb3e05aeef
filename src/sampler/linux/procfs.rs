//! What the collector reads from `/proc`: the process's threads with their start times,
//! a thread's blocked-signal mask, and the memory maps (to find a thread's stack).
//!
//! Collector-side only (allocates freely); parsers are pure functions, tested on text.

use std::fs::File;
use std::io::Read;

use super::bounds::StackBounds;

/// A thread's identity: tids are reused quickly, `(tid, starttime)` is not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ThreadKey {
    /// Kernel thread id.
    pub tid: i32,
    /// Field 22 of `/proc/self/task/<tid>/stat` (clock ticks since boot).
    pub starttime: u64,
}

/// Reads a small `/proc` file into `buf` (cleared first).
fn read_into(path: &str, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf)?;
    Ok(())
}

/// Every live thread of the process. Threads that exit during the scan are skipped.
#[cfg(test)]
pub(crate) fn threads(buf: &mut Vec<u8>) -> std::io::Result<Vec<ThreadKey>> {
    threads_since(&std::collections::HashMap::new(), buf)
}

/// Every live thread of the process, reading `stat` (for the start time) only for tids
/// that `known` (tid -> start time, from an earlier scan) does not hold: one directory
/// listing plus one small read per new thread, instead of a read per thread.
///
/// A tid that was reused since `known` was taken (one thread exited, another got its tid)
/// keeps its old start time here; callers pass an empty map now and then to catch that.
pub(crate) fn threads_since(
    known: &std::collections::HashMap<i32, u64>,
    buf: &mut Vec<u8>,
) -> std::io::Result<Vec<ThreadKey>> {
    let mut keys = Vec::new();
    let mut path = String::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let Ok(entry) = entry else { continue };
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(&starttime) = known.get(&tid) {
            keys.push(ThreadKey { tid, starttime });
            continue;
        }
        path.clear();
        use std::fmt::Write;
        let _ = write!(path, "/proc/self/task/{tid}/stat");
        if read_into(&path, buf).is_err() {
            continue; // exited meanwhile
        }
        if let Some(starttime) = parse_starttime(buf) {
            keys.push(ThreadKey { tid, starttime });
        }
    }
    Ok(keys)
}

/// Field 22 of a `stat` line. `comm` (field 2) is in parentheses and may hold spaces
/// and `)`, so fields are counted after the *last* `)`.
pub(crate) fn parse_starttime(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = std::str::from_utf8(stat.get(close + 1..)?).ok()?;
    // After `)`: field 3 (state) is the first token, so field 22 is token 19 (0-based).
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

/// Whether `tid` has SIGPROF blocked (`SigBlk:` of its `status`). `None`: unreadable.
pub(crate) fn sigprof_blocked(tid: i32, buf: &mut Vec<u8>) -> Option<bool> {
    read_into(&format!("/proc/self/task/{tid}/status"), buf).ok()?;
    parse_sigprof_blocked(buf)
}

/// Reads bit `SIGPROF - 1` of the `SigBlk:` mask.
pub(crate) fn parse_sigprof_blocked(status: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(status).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("SigBlk:"))?;
    let mask = u64::from_str_radix(line.trim(), 16).ok()?;
    Some(mask & (1 << (libc::SIGPROF - 1)) != 0)
}

/// One line of `/proc/self/maps` that may be a thread stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StackMapping {
    /// The mapping's range.
    pub bounds: StackBounds,
}

/// Readable, writable, private mappings that are anonymous or `[stack]`: the only kinds
/// a thread stack can be. Sorted by address, as the kernel lists them.
pub(crate) fn stack_mappings(buf: &mut Vec<u8>) -> std::io::Result<Vec<StackMapping>> {
    read_into("/proc/self/maps", buf)?;
    Ok(parse_stack_mappings(buf))
}

/// See [`stack_mappings`].
pub(crate) fn parse_stack_mappings(maps: &[u8]) -> Vec<StackMapping> {
    let Ok(text) = std::str::from_utf8(maps) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        // offset, dev, inode, then an optional path.
        let path = fields.nth(3);
        if !perms.starts_with("rw") || !perms.ends_with('p') {
            continue;
        }
        if !matches!(path, None | Some("[stack]")) {
            continue;
        }
        let Some((lo, hi)) = range.split_once('-') else {
            continue;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            continue;
        };
        if lo < hi {
            out.push(StackMapping {
                bounds: StackBounds { lo, hi },
            });
        }
    }
    out
}

/// The mapping that contains `sp`, if any (`mappings` sorted by address).
pub(crate) fn mapping_containing(mappings: &[StackMapping], sp: usize) -> Option<StackBounds> {
    let i = mappings.partition_point(|m| m.bounds.hi <= sp);
    let m = mappings.get(i)?;
    (m.bounds.lo <= sp && sp < m.bounds.hi).then_some(m.bounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_since_reads_stat_only_for_threads_it_does_not_know() {
        let mut buf = Vec::new();
        // SAFETY: `gettid` has no preconditions.
        let me = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        let fresh = threads(&mut buf).unwrap();
        let real = fresh.iter().find(|k| k.tid == me).unwrap().starttime;
        // A known tid keeps the start time it was given (no `stat` read)...
        let known = std::collections::HashMap::from([(me, real + 12_345)]);
        let since = threads_since(&known, &mut buf).unwrap();
        assert_eq!(since.iter().find(|k| k.tid == me).unwrap().starttime, real + 12_345);
        // ...and a thread it does not know is read from `/proc`.
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: as above.
            tx.send(unsafe { libc::syscall(libc::SYS_gettid) } as i32).unwrap();
            done_rx.recv().unwrap();
        });
        let other = rx.recv().unwrap();
        let since = threads_since(&known, &mut buf).unwrap();
        let key = since.iter().find(|k| k.tid == other).expect("the new thread is listed");
        assert!(key.starttime >= real, "{} < {real}", key.starttime);
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn starttime_is_found_after_a_comm_with_spaces_and_parens() {
        let line = b"4242 (a b) c)) R 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 123456 20 21\n";
        assert_eq!(parse_starttime(line), Some(123456));
        assert_eq!(parse_starttime(b"12 (x) R 1 2"), None);
    }

    #[test]
    fn starttime_of_this_thread_is_readable() {
        let mut buf = Vec::new();
        let keys = threads(&mut buf).unwrap();
        // SAFETY: `gettid` has no preconditions.
        let me = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
        assert!(keys.iter().any(|k| k.tid == me && k.starttime > 0));
    }

    #[test]
    fn sigblk_bit_26_means_sigprof_blocked() {
        let status = b"Name:\tx\nSigPnd:\t0000000000000000\nSigBlk:\t0000000004000000\n";
        assert_eq!(parse_sigprof_blocked(status), Some(true));
        let status = b"SigBlk:\t0000000000010000\n";
        assert_eq!(parse_sigprof_blocked(status), Some(false));
        assert_eq!(parse_sigprof_blocked(b"Name:\tx\n"), None);
    }

    #[test]
    fn only_private_writable_anonymous_or_stack_mappings_count() {
        let maps = b"\
55d0a0000000-55d0a0001000 r--p 00000000 08:01 123 /usr/bin/app
7f0000000000-7f0000001000 ---p 00000000 00:00 0
7f0000001000-7f0000801000 rw-p 00000000 00:00 0
7f0000900000-7f0000901000 rw-p 00000000 08:01 55 /usr/lib/libc.so.6
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
7ffc00030000-7ffc00032000 r-xp 00000000 00:00 0                          [vdso]
";
        let m = parse_stack_mappings(maps);
        assert_eq!(
            m.iter()
                .map(|m| (m.bounds.lo, m.bounds.hi))
                .collect::<Vec<_>>(),
            vec![
                (0x7f0000001000, 0x7f0000801000),
                (0x7ffc00000000, 0x7ffc00021000)
            ]
        );
        assert_eq!(
            mapping_containing(&m, 0x7f0000400000),
            Some(StackBounds {
                lo: 0x7f0000001000,
                hi: 0x7f0000801000
            })
        );
        assert_eq!(mapping_containing(&m, 0x7f0000801000), None);
        assert_eq!(
            mapping_containing(&m, 0x7ffc00020ff8).map(|b| b.hi),
            Some(0x7ffc00021000)
        );
        assert_eq!(mapping_containing(&m, 0x10), None);
    }
}
