//! Shared helpers of the sampler tests: a collector loop (what the profiler's collector
//! thread does), thread CPU clocks, and function address ranges from the test binary's
//! own symbol table (so frames can be matched to functions without a symbolizer).
#![allow(dead_code)]

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use object::{Object, ObjectSegment, ObjectSymbol};
use span_profiler::__private::{Sampler, SamplerConfig, SamplerStats};

/// Serialises the tests of one binary that start the sampler (it is process-wide).
pub fn sampler_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A drained sample, owned.
#[derive(Debug, Clone)]
pub struct Sample {
    pub weight: u64,
    pub label_id: u64,
    pub tid: i32,
    pub frames: Vec<usize>,
}

/// Runs `maintain` + `drain` every 100 ms on its own thread, like the real collector.
pub struct Collector {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(Vec<Sample>, SamplerStats)>>,
}

impl Collector {
    pub fn start(config: SamplerConfig) -> Collector {
        let sampler = Sampler::start(config).expect("the sampler starts");
        Self::run(sampler)
    }

    pub fn run(mut sampler: Sampler) -> Collector {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("test-collector".into())
            .spawn(move || {
                let mut samples = Vec::new();
                let mut take = |s: &span_profiler::__private::DrainedSample<'_>| {
                    samples.push(Sample {
                        weight: s.weight,
                        label_id: s.label_id,
                        tid: s.tid,
                        frames: s.frames.to_vec(),
                    })
                };
                while !flag.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(100));
                    sampler.maintain();
                    sampler.drain(&mut take);
                }
                sampler.drain(&mut take);
                let stats = sampler.stop();
                (samples, stats)
            })
            .expect("spawn collector");
        Collector {
            stop,
            thread: Some(thread),
        }
    }

    /// Drains one last time, stops the sampler and returns everything collected.
    pub fn finish(mut self) -> (Vec<Sample>, SamplerStats) {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("collector thread")
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of the whole process.
pub fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { libc::clock_gettime(id, &mut ts) }, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Spins until the calling thread has used `cpu` more CPU time; returns what it used.
#[inline(always)]
pub fn spin_for(cpu: Duration, mut work: impl FnMut(u64) -> u64) -> Duration {
    let start = thread_cpu();
    let mut acc = 1u64;
    loop {
        for _ in 0..2000 {
            acc = std::hint::black_box(work(acc));
        }
        let used = thread_cpu() - start;
        if used >= cpu {
            std::hint::black_box(acc);
            return used;
        }
    }
}

/// Symbols of the running executable: runtime address ranges of its functions.
pub struct Symbols {
    functions: Vec<(Range<usize>, String)>,
}

impl Symbols {
    /// Reads `/proc/self/exe`'s symbol table and the load bias from `/proc/self/maps`.
    pub fn load() -> &'static Symbols {
        static SYMBOLS: OnceLock<Symbols> = OnceLock::new();
        SYMBOLS.get_or_init(|| {
            let exe = std::fs::read_link("/proc/self/exe").expect("readlink /proc/self/exe");
            let data = std::fs::read(&exe).expect("read the test binary");
            let file = object::File::parse(&*data).expect("parse the test binary");
            let min_vaddr = file
                .segments()
                .map(|s| s.address())
                .min()
                .expect("PT_LOAD segments")
                & !0xfff;
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let exe_str = exe.to_str().unwrap();
            let base = maps
                .lines()
                .find(|l| {
                    let f: Vec<&str> = l.split_ascii_whitespace().collect();
                    f.len() >= 6 && f[5] == exe_str && f[2] == "00000000"
                })
                .and_then(|l| usize::from_str_radix(l.split('-').next()?, 16).ok())
                .expect("the executable's first mapping");
            let bias = base - min_vaddr as usize;
            let mut functions: Vec<(Range<usize>, String)> = file
                .symbols()
                .filter(|s| s.kind() == object::SymbolKind::Text && s.size() > 0)
                .map(|s| {
                    let start = s.address() as usize + bias;
                    (
                        start..start + s.size() as usize,
                        s.name().unwrap_or("?").to_string(),
                    )
                })
                .collect();
            functions.sort_by_key(|(r, _)| r.start);
            Symbols { functions }
        })
    }

    /// The address range of the function that starts at `addr` (e.g. `f as usize`).
    pub fn range_of(&self, addr: usize) -> Range<usize> {
        let (range, _) = self
            .functions
            .iter()
            .find(|(r, _)| r.start == addr)
            .unwrap_or_else(|| panic!("no symbol starts at {addr:#x}"));
        range.clone()
    }

    /// The name of the function containing `addr`, if any.
    pub fn name_of(&self, addr: usize) -> Option<&str> {
        let i = self.functions.partition_point(|(r, _)| r.start <= addr);
        let (r, name) = self.functions.get(i.checked_sub(1)?)?;
        r.contains(&addr).then_some(name.as_str())
    }
}

/// Whether `frames` (leaf PC first, then return addresses) hold a frame of `range`.
/// Return addresses point after a call, so they are looked up at `address - 1`.
pub fn holds(frames: &[usize], range: &Range<usize>) -> bool {
    frames.iter().enumerate().any(|(i, &a)| {
        let a = if i == 0 { a } else { a.wrapping_sub(1) };
        range.contains(&a)
    })
}

/// Timers of this process (`/proc/self/timers` has one `ID:` line per timer).
pub fn timer_count() -> usize {
    std::fs::read_to_string("/proc/self/timers")
        .map(|t| t.lines().filter(|l| l.starts_with("ID:")).count())
        .unwrap_or(0)
}

/// Threads of this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}
