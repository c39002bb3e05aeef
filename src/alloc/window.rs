//! The collector's side: drained records become one allocation window per CPU window.
//!
//! `alloc_*` values are the window's delta (records drained while it was open, plus the
//! weight of dropped records per label set), `inuse_*` the snapshot at its end: the
//! sampled allocations still in the live table. A live sample keeps its resolved label
//! set (not its id), so an object cached long after its request ended still carries the
//! request's labels.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use super::records::{self, DropDrainer, Record};
use super::{live, OWN_FRAMES};
use crate::labels::registry::Registry;
use crate::labels::set::LabelSet;
use crate::window::{ClosedWindow, WindowAggregator, WindowLimits};

type Key = (Arc<[usize]>, Option<Arc<LabelSet>>);

/// A sampled allocation still tracked.
struct LiveSample {
    key: Key,
    objects: f64,
    bytes: f64,
}

/// Stands for records that found the buffer full (their stacks are lost, their weight
/// is kept under this frame, with their labels).
#[inline(never)]
fn dropped_allocation_records() {
    std::hint::black_box(());
}

/// Stands for allocations on threads whose stack could not be walked yet (the collector
/// had not published the thread's stack bounds: a thread younger than a scan): their
/// weight and labels are kept under this frame.
#[inline(never)]
fn allocation_stack_not_yet_known() {
    std::hint::black_box(());
}

/// Samples kept beyond twice the live table's count before the freed ones are dropped
/// in a drain rather than at the window's end.
const FORGET_SLACK: usize = 1024;

/// Allocation windows of one profiler session.
pub(crate) struct AllocCollector {
    sample_bytes: u64,
    /// Serial -> the sample, for samples tracked in the live table.
    live: HashMap<u64, LiveSample>,
    /// (objects, bytes) allocated per (stack, labels) in the open window.
    allocated: HashMap<Key, (f64, f64)>,
    /// One copy per distinct stack.
    stacks: HashSet<Arc<[usize]>>,
    drops: DropDrainer,
    /// Scratch of `close`, kept between windows: the serials still in the live table.
    /// Hundreds of KiB once many allocations are tracked; freeing a block that large
    /// every window would raise glibc's mmap and trim thresholds for the whole process.
    tracked: HashSet<u64>,
    /// Scratch of `close`, kept between windows (empty between them): the window's four
    /// values per (stack, labels).
    values: HashMap<Key, [f64; 4]>,
}

impl AllocCollector {
    /// Starts recording at `sample_bytes` (0: off, then `None`). Records left from an
    /// earlier session are discarded.
    pub(crate) fn start(sample_bytes: u64) -> Option<Self> {
        if sample_bytes == 0 {
            return None;
        }
        records::drain(|_| {});
        let mut drops = DropDrainer::default();
        drops.drain(|_, _, _| {});
        super::start_recording(sample_bytes);
        Some(Self {
            sample_bytes,
            live: HashMap::new(),
            allocated: HashMap::new(),
            stacks: HashSet::new(),
            drops,
            tracked: HashSet::new(),
            values: HashMap::new(),
        })
    }

    /// Stops recording (the last window is closed after this).
    pub(crate) fn stop(&self) {
        super::stop_recording();
    }

    /// Takes what the allocating threads recorded. Call before the registry's
    /// `on_drain`: label ids are resolved here.
    pub(crate) fn drain(&mut self) {
        let registry = Registry::global();
        let mut ids: HashMap<u64, Option<Arc<LabelSet>>> = HashMap::new();
        let mut resolve = |id: u64| -> Option<Arc<LabelSet>> {
            if id == 0 {
                return None;
            }
            ids.entry(id)
                .or_insert_with(|| registry.resolve(id))
                .clone()
        };
        let mut drained = Vec::new();
        records::drain(|r: &Record| drained.push(*r));
        for r in &drained {
            let frames = &r.frames[..r.len.min(r.frames.len())];
            let mut own: Vec<usize>;
            let unknown = [allocation_stack_not_yet_known as *const () as usize];
            let frames: &[usize] = if frames.len() > OWN_FRAMES {
                // The new leaf is a return address: point it into the call.
                own = frames[OWN_FRAMES..].to_vec();
                own[0] = own[0].saturating_sub(1);
                &own
            } else {
                // Only the recording path's own frames: the walk had no bounds.
                &unknown
            };
            let stack = self.intern(frames);
            let key = (stack, resolve(r.label_id));
            let sum = self.allocated.entry(key.clone()).or_insert((0.0, 0.0));
            sum.0 += r.objects;
            sum.1 += r.bytes;
            if r.serial != 0 {
                self.live.insert(
                    r.serial,
                    LiveSample {
                        key,
                        objects: r.objects,
                        bytes: r.bytes,
                    },
                );
            }
        }
        // Most sampled allocations are freed long before the window ends; without this
        // the map would hold every sample of a window (its capacity then grows with the
        // busiest window, for good). A scan reads the whole live table (64 Ki entries,
        // tens of microseconds), so it runs only once freed samples are the majority.
        if self.live.len() > 2 * live::live() as usize + FORGET_SLACK {
            self.forget_freed();
        }
        let marker: Arc<[usize]> = self.intern(&[dropped_allocation_records as *const () as usize]);
        let allocated = &mut self.allocated;
        self.drops.drain(|label_id, objects, bytes| {
            let sum = allocated
                .entry((marker.clone(), resolve(label_id)))
                .or_insert((0.0, 0.0));
            sum.0 += objects;
            sum.1 += bytes;
        });
    }

    fn intern(&mut self, frames: &[usize]) -> Arc<[usize]> {
        if let Some(s) = self.stacks.get(frames) {
            return s.clone();
        }
        let s: Arc<[usize]> = Arc::from(frames);
        self.stacks.insert(s.clone());
        s
    }

    /// Drops the samples whose allocation was freed (no longer in the live table).
    /// Serials are never reused, so a sample once gone stays gone.
    fn forget_freed(&mut self) {
        let tracked = &mut self.tracked;
        tracked.clear();
        live::scan(|serial| {
            tracked.insert(serial);
        });
        self.live.retain(|serial, _| tracked.contains(serial));
    }

    /// Closes the allocation window `[start, end)`: `None` when it has no sample.
    pub(crate) fn close(
        &mut self,
        limits: WindowLimits,
        start: SystemTime,
        end: SystemTime,
    ) -> Option<ClosedWindow> {
        self.drain();
        self.forget_freed();
        let values = &mut self.values;
        for (key, (objects, bytes)) in self.allocated.drain() {
            let v = values.entry(key).or_insert([0.0; 4]);
            v[0] += objects;
            v[1] += bytes;
        }
        for sample in self.live.values() {
            let v = values.entry(sample.key.clone()).or_insert([0.0; 4]);
            v[2] += sample.objects;
            v[3] += sample.bytes;
        }
        self.stacks.retain(|s| Arc::strong_count(s) > 1);
        let mut window = WindowAggregator::new_alloc(limits, start, self.sample_bytes);
        for ((stack, set), v) in values.drain() {
            window.add_alloc(&stack, set, v.map(|x| x.round() as u64));
        }
        if window.is_empty() {
            return None;
        }
        Some(window.close(end))
    }
}

impl Drop for AllocCollector {
    fn drop(&mut self) {
        super::stop_recording();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_of_freed_allocations_leave_in_a_drain_and_live_ones_stay_to_the_close() {
        let _table = crate::alloc::TEST_LIVE_TABLE.lock();
        let mut collector = AllocCollector::start(1 << 20).expect("sampling on");
        let stack = collector.intern(&[0x1000, 0x2000]);
        // Serials the allocator does not reach in a test process, and addresses it does
        // not hand out.
        let first = u64::MAX / 2;
        let base = 0x7100_beef_0000usize;
        let sampled = 3 * FORGET_SLACK as u64;
        for serial in first..first + sampled {
            let sample = LiveSample {
                key: (stack.clone(), None),
                objects: 1.0,
                bytes: 64.0,
            };
            collector.live.insert(serial, sample);
        }
        // Ten of them still allocated, the others freed.
        for i in 0..10 {
            assert!(live::insert(base + i * 64, first + i as u64));
        }
        collector.drain();
        assert_eq!(
            collector.live.len(),
            10,
            "freed samples leave before the window ends"
        );
        let now = SystemTime::now();
        let closed = collector.close(WindowLimits::default(), now, now);
        for i in 0..10 {
            assert!(live::forget(base + i * 64));
        }
        let closed = closed.expect("live samples make a window");
        let inuse = closed.samples.iter().fold([0; 2], |sum, s| {
            [sum[0] + s.values[2], sum[1] + s.values[3]]
        });
        assert_eq!(inuse, [10, 640], "in-use objects and bytes of the live ten");
    }
}
