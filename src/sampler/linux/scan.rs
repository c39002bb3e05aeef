//! The collector's periodic sampler work: the SIGPROF disposition check, the thread
//! scan (arm new threads, delete the timers of vanished ones, `SigBlk` checks) and the
//! publication of stack bounds for threads that reported an SP.

use std::collections::HashMap;

use super::armed::{armed, log_arm_error, ArmedThread};
use super::bounds::TABLE;
use super::procfs;
use super::session::Sampler;
use super::timers::{self, ArmError, Disposition};
use crate::counters::LogOnce;
use crate::sync::lock;

static LOG_REPLACED: LogOnce = LogOnce::new();
static LOG_BLOCKED: LogOnce = LogOnce::new();

/// How often (in scans) every armed thread's `SigBlk` is re-read.
const BLOCKED_CHECK_EVERY: u64 = 10;

/// How often (in scans) every thread's start time is re-read: between two such scans
/// only new tids are read, so a tid reused by a new thread within that time (rare: the
/// kernel hands tids out in order) is noticed within this many scans (about a second).
const FULL_SCAN_EVERY: u64 = 10;

impl Sampler {
    pub(super) fn check_disposition(&mut self) {
        if self.replaced {
            return;
        }
        match timers::disposition() {
            Ok(Disposition::Ours) | Err(_) => return,
            Ok(Disposition::Default | Disposition::Foreign) => {}
        }
        self.replaced = true;
        if let Some(armed) = armed() {
            let mut armed = lock(armed);
            armed.arming = false;
            for (_, thread) in armed.threads.drain() {
                timers::delete(thread.timer);
            }
        }
        if LOG_REPLACED.first() {
            log::warn!(
                "span-profiler: another component replaced the SIGPROF handler; sampling \
                 stopped (start other profilers before span-profiler, or not at all)"
            );
        }
    }

    pub(super) fn scan(&mut self) {
        let full = self.stats.scans % FULL_SCAN_EVERY == 0;
        if full {
            self.known_threads.clear();
        }
        let Ok(listed) = procfs::threads_since(&self.known_threads, &mut self.buf) else {
            return;
        };
        self.stats.scans += 1;
        let listed_map: HashMap<i32, u64> = listed.iter().map(|k| (k.tid, k.starttime)).collect();
        let mut newly_armed = Vec::new();
        let mut arm_errors = Vec::new();
        let Some(armed) = armed() else { return };
        {
            let mut armed = lock(armed);
            if armed.cookie != self.cookie {
                return;
            }
            // Threads that vanished, or whose tid now names a newer thread.
            let mut gone = Vec::new();
            for (tid, thread) in armed.threads.iter_mut() {
                match (listed_map.get(tid), thread.starttime) {
                    (None, _) => gone.push(*tid),
                    (Some(&now), None) => thread.starttime = Some(now),
                    (Some(&now), Some(then)) if now != then => gone.push(*tid),
                    _ => {}
                }
            }
            for tid in gone {
                if let Some(thread) = armed.threads.remove(&tid) {
                    timers::delete(thread.timer);
                    self.stats.timers_deleted += 1;
                }
                self.forget(tid);
            }
            if armed.arming {
                for key in &listed {
                    if armed.threads.contains_key(&key.tid) {
                        continue;
                    }
                    // No bounds of an older thread may survive under this tid.
                    self.forget(key.tid);
                    match timers::arm(key.tid, self.cookie, self.interval_ns) {
                        Ok(timer) => {
                            armed.threads.insert(
                                key.tid,
                                ArmedThread {
                                    starttime: Some(key.starttime),
                                    timer,
                                },
                            );
                            self.stats.armed_by_scan += 1;
                            newly_armed.push(key.tid);
                        }
                        Err(ArmError::Gone) => {}
                        Err(err) => {
                            if matches!(err, ArmError::Again) {
                                armed.arm_failures_eagain += 1;
                            } else {
                                armed.arm_failures_other += 1;
                            }
                            arm_errors.push((key.tid, err));
                        }
                    }
                }
            }
            let armed_listed = listed
                .iter()
                .filter(|k| armed.threads.contains_key(&k.tid))
                .count();
            self.stats.threads_armed = armed.threads.len() as u64;
            self.stats.threads_unarmed = (listed.len() - armed_listed) as u64;
            self.stats.armed_by_thread = armed.armed_by_thread;
            self.stats.arm_failures_eagain = armed.arm_failures_eagain;
            self.stats.arm_failures_other = armed.arm_failures_other;
        }
        // Logging and /proc reads happen outside the lock (a logger may write labels,
        // which can arm a thread, which takes the lock).
        for (tid, err) in &arm_errors {
            log_arm_error(*tid, err);
        }
        self.check_blocked(&listed_map, &newly_armed);
        self.known_threads = listed_map;
    }

    /// Drops what we know about `tid`'s stack.
    pub(super) fn forget(&mut self, tid: i32) {
        if self.published.remove(&tid) {
            TABLE.remove(tid);
        }
        self.pending_sp.remove(&tid);
        self.blocked.remove(&tid);
    }

    fn check_blocked(&mut self, listed: &HashMap<i32, u64>, newly_armed: &[i32]) {
        let full = self.stats.scans % BLOCKED_CHECK_EVERY == 1;
        let tids: Vec<i32> = if full {
            listed.keys().copied().collect()
        } else {
            newly_armed.to_vec()
        };
        if full {
            self.blocked.clear();
        }
        for tid in tids {
            if procfs::sigprof_blocked(tid, &mut self.buf) == Some(true) {
                self.blocked.insert(tid);
            }
        }
        self.stats.threads_sigprof_blocked = self.blocked.len() as u64;
        if !self.blocked.is_empty() && LOG_BLOCKED.first() {
            log::warn!(
                "span-profiler: {} thread(s) block SIGPROF and are not sampled; see \
                 `stats().threads_sigprof_blocked`",
                self.blocked.len()
            );
        }
    }

    pub(super) fn publish_bounds(&mut self) {
        if self.pending_sp.is_empty() {
            return;
        }
        let Ok(mappings) = procfs::stack_mappings(&mut self.buf) else {
            return;
        };
        let Some(armed) = armed() else { return };
        let armed = lock(armed);
        for (tid, sp) in self.pending_sp.drain() {
            // Only threads we know are alive under this tid (their key was scanned).
            if !armed.threads.contains_key(&tid) {
                continue;
            }
            match procfs::mapping_containing(&mappings, sp) {
                Some(bounds) if TABLE.publish(tid, bounds) => {
                    self.published.insert(tid);
                    self.stats.bounds_published += 1;
                }
                _ => self.stats.bounds_failed += 1,
            }
        }
    }
}
