//! CPU accuracy: weighted samples per thread match the thread's CPU time at 100 Hz and
//! 1 kHz (overrun weighting), and a thread born after the sampler started is found.

mod sampler_common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use sampler_common::{sampler_lock, spin_for, thread_cpu, Collector};
use span_profiler::__private::SamplerConfig;

fn gettid() -> i32 {
    // SAFETY: `gettid` has no preconditions.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn weight_by_tid(samples: &[sampler_common::Sample]) -> HashMap<i32, u64> {
    let mut by_tid = HashMap::new();
    for s in samples {
        *by_tid.entry(s.tid).or_insert(0) += s.weight;
    }
    by_tid
}

fn two_busy_threads_within_10_percent(rate_hz: u32) {
    let _lock = sampler_lock();
    let barrier = Arc::new(Barrier::new(3));
    let threads: Vec<_> = (0..2)
        .map(|i| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let start = thread_cpu();
                spin_for(Duration::from_secs(2), |x| {
                    x.wrapping_mul(31 + i).wrapping_add(7)
                });
                (gettid(), thread_cpu() - start)
            })
        })
        .collect();
    // Both threads exist: `start` arms them in its first scan.
    let collector = Collector::start(SamplerConfig {
        sample_rate_hz: rate_hz,
        ..Default::default()
    });
    barrier.wait();
    let measured: Vec<(i32, Duration)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let (samples, stats) = collector.finish();
    let by_tid = weight_by_tid(&samples);
    let period = 1_000_000_000 / u64::from(rate_hz);
    eprintln!("{rate_hz} Hz: {stats:?}");
    for (tid, cpu) in measured {
        let sampled = by_tid.get(&tid).copied().unwrap_or(0) * period;
        let ratio = sampled as f64 / cpu.as_nanos() as f64;
        eprintln!("{rate_hz} Hz: thread {tid}: sampled {sampled} ns of {cpu:?} (ratio {ratio:.3})");
        assert!(
            (0.9..=1.1).contains(&ratio),
            "{rate_hz} Hz: thread {tid} ratio {ratio:.3}"
        );
    }
}

#[test]
fn two_busy_threads_are_sampled_within_10_percent_at_100_hz() {
    two_busy_threads_within_10_percent(100);
}

#[test]
fn two_busy_threads_are_sampled_within_10_percent_at_1000_hz() {
    two_busy_threads_within_10_percent(1000);
}

#[test]
fn a_thread_started_a_second_after_the_sampler_gets_at_least_80_percent_sampled() {
    let _lock = sampler_lock();
    let collector = Collector::start(SamplerConfig {
        sample_rate_hz: 100,
        ..Default::default()
    });
    std::thread::sleep(Duration::from_secs(1));
    // Never writes a label: only the collector's discovery scan can arm it.
    let (tid, cpu) = std::thread::spawn(|| {
        let start = thread_cpu();
        spin_for(Duration::from_secs(1), |x| x.rotate_left(3) ^ 0x55);
        (gettid(), thread_cpu() - start)
    })
    .join()
    .unwrap();
    let (samples, stats) = collector.finish();
    let sampled = weight_by_tid(&samples).get(&tid).copied().unwrap_or(0) * 10_000_000;
    let ratio = sampled as f64 / cpu.as_nanos() as f64;
    eprintln!("late thread: sampled {sampled} ns of {cpu:?} (ratio {ratio:.3}); {stats:?}");
    assert!(ratio >= 0.8, "late thread ratio {ratio:.3}");
    assert!(ratio <= 1.1, "late thread ratio {ratio:.3}");
}
