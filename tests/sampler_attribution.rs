//! Raw attribution: samples taken inside a task's code carry that task's label id, on a
//! 4-worker runtime where 16 labelled tasks of 4 classes (plus an unlabelled one)
//! interleave on 2 cores in random 0.5-2 ms slices.

mod sampler_common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sampler_common::{holds, spin_for, Collector, Symbols};
use span_profiler::__private::{label_id_of, SamplerConfig};
use span_profiler::{Labels, ProfiledExt};

const RATE_HZ: u32 = 1000;
/// Each class burns at least this much CPU (at least 4 s of wall time, at most 60 s:
/// the machine may be shared), so every class gets enough samples for the bounds below.
const MIN_CLASS_CPU: Duration = Duration::from_millis(2000);
const MIN_RUN: Duration = Duration::from_secs(4);
const MAX_RUN: Duration = Duration::from_secs(60);
const TASKS_PER_CLASS: u64 = 4;

// One burner per class, each with its own constants so no two can be merged.
#[inline(never)]
fn burn_class_0(cpu: Duration) -> Duration {
    spin_for(cpu, |x| x.wrapping_mul(6364136223846793005).wrapping_add(1))
}
#[inline(never)]
fn burn_class_1(cpu: Duration) -> Duration {
    spin_for(cpu, |x| x.rotate_left(7) ^ 0x9E37_79B9)
}
#[inline(never)]
fn burn_class_2(cpu: Duration) -> Duration {
    spin_for(cpu, |x| x.wrapping_mul(0xff51afd7ed558ccd) ^ (x >> 33))
}
#[inline(never)]
fn burn_class_3(cpu: Duration) -> Duration {
    spin_for(cpu, |x| x.wrapping_add(0x632BE59BD9B4E019).rotate_right(11))
}
#[inline(never)]
fn burn_unlabelled(cpu: Duration) -> Duration {
    spin_for(cpu, |x| x.wrapping_sub(0x2545F4914F6CDD1D) ^ (x << 5))
}

const BURNERS: [fn(Duration) -> Duration; 4] =
    [burn_class_0, burn_class_1, burn_class_2, burn_class_3];

/// xorshift64*: slice lengths that cannot alias with the sampling period.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545F4914F6CDD1D)
}

async fn worker(
    burner: fn(Duration) -> Duration,
    seed: u64,
    cpu: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    let mut state = seed | 1;
    while !stop.load(Relaxed) {
        let slice = Duration::from_micros(500 + next(&mut state) % 1500);
        let used = burner(slice);
        cpu.fetch_add(used.as_nanos() as u64, Relaxed);
        tokio::task::yield_now().await;
    }
}

#[test]
fn samples_inside_a_tasks_code_carry_that_tasks_labels_and_weights_match_its_cpu() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let symbols = Symbols::load();
    let ranges: Vec<_> = BURNERS
        .iter()
        .map(|b| symbols.range_of(*b as usize))
        .collect();
    let unlabelled_range = symbols.range_of(burn_unlabelled as *const () as usize);

    let collector = Collector::start(SamplerConfig {
        sample_rate_hz: RATE_HZ,
        ..Default::default()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let class_cpu: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut class_ids: Vec<HashSet<u64>> = vec![HashSet::new(); 4];
    let mut handles = Vec::new();
    for class in 0..4 {
        for task in 0..TASKS_PER_CLASS {
            let labels = Labels::span(0x1000 * (class as u64 + 1) + task, format!("class-{class}"));
            let fut = worker(
                BURNERS[class],
                0x5eed + class as u64 * 97 + task * 13,
                class_cpu[class].clone(),
                stop.clone(),
            )
            .with_labels(labels);
            let id = label_id_of(&fut);
            assert_ne!(id, 0);
            class_ids[class].insert(id);
            handles.push(runtime.spawn(fut));
        }
    }
    let unlabelled_cpu = Arc::new(AtomicU64::new(0));
    handles.push(runtime.spawn(worker(
        burn_unlabelled,
        0xabc,
        unlabelled_cpu.clone(),
        stop.clone(),
    )));

    let started = Instant::now();
    while started.elapsed() < MIN_RUN
        || (started.elapsed() < MAX_RUN
            && class_cpu
                .iter()
                .any(|c| Duration::from_nanos(c.load(Relaxed)) < MIN_CLASS_CPU))
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Relaxed);
    for handle in handles {
        runtime.block_on(handle).unwrap();
    }
    let (samples, stats) = collector.finish();
    let elapsed = started.elapsed();
    drop(runtime);

    let owner: HashMap<u64, usize> = class_ids
        .iter()
        .enumerate()
        .flat_map(|(c, ids)| ids.iter().map(move |id| (*id, c)))
        .collect();
    let period_ns = 1_000_000_000 / RATE_HZ as u64;
    eprintln!("{} samples in {elapsed:?}; stats: {stats:?}", samples.len());
    for class in 0..4 {
        let inside: Vec<_> = samples
            .iter()
            .filter(|s| holds(&s.frames, &ranges[class]))
            .collect();
        let own = inside
            .iter()
            .filter(|s| class_ids[class].contains(&s.label_id))
            .count();
        let foreign = inside
            .iter()
            .filter(|s| matches!(owner.get(&s.label_id), Some(c) if *c != class))
            .count();
        let weight: u64 = samples
            .iter()
            .filter(|s| class_ids[class].contains(&s.label_id))
            .map(|s| s.weight)
            .sum();
        let sampled = weight * period_ns;
        let measured = class_cpu[class].load(Relaxed);
        let ratio = sampled as f64 / measured as f64;
        eprintln!(
            "class {class}: {} samples in its burner, {own} with its labels, {foreign} with another class's; \
             sampled {:.3} s of {:.3} s measured (ratio {ratio:.3})",
            inside.len(),
            sampled as f64 / 1e9,
            measured as f64 / 1e9
        );
        assert!(
            inside.len() >= 150,
            "class {class}: only {} samples inside its burner",
            inside.len()
        );
        assert!(
            own * 100 >= inside.len() * 99,
            "class {class}: {own} of {} carry its labels",
            inside.len()
        );
        assert_eq!(
            foreign, 0,
            "class {class}: samples with another class's labels"
        );
        assert!(
            (0.85..=1.15).contains(&ratio),
            "class {class}: sampled/measured CPU = {ratio:.3}"
        );
    }
    let unlabelled: Vec<_> = samples
        .iter()
        .filter(|s| holds(&s.frames, &unlabelled_range))
        .collect();
    eprintln!("unlabelled burner: {} samples", unlabelled.len());
    assert!(
        unlabelled.len() >= 20,
        "only {} samples in the unlabelled burner",
        unlabelled.len()
    );
    assert!(
        unlabelled.iter().all(|s| s.label_id == 0),
        "an unlabelled sample carried a label id"
    );
    assert_eq!(stats.dropped_buffer_full, 0);
}
