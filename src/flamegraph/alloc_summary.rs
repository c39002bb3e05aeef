//! `summarize_allocations`: bytes and objects allocated per span name, from allocation
//! profiles.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use super::stacks::{Pick, Stack, Stacks};
use super::{is_std_frame, FlamegraphError, Profile, SampleFilter};

/// Allocations per span name over a set of allocation profiles: what
/// [`summarize_allocations`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocSummary {
    /// One entry per `span_name`, most bytes first.
    pub spans: Vec<SpanAllocations>,
    /// Bytes allocated by work without a `span_name` (outside any profiled span).
    pub unlabelled_bytes: u64,
    /// Bytes allocated in all.
    pub total_bytes: u64,
}

/// What the requests of one span name allocated (estimates: each sample stands for the
/// allocations the sampling skipped, as Go's heap profiles do).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpanAllocations {
    /// The `span_name` label, e.g. `GET /orders/{id}`.
    pub span_name: String,
    /// Distinct `span_id`s with at least one sampled allocation: a lower bound of the
    /// requests (a request that allocates little may have no sample).
    pub requests: usize,
    /// Bytes allocated (`alloc_space`).
    pub bytes: u64,
    /// Allocations (`alloc_objects`).
    pub objects: u64,
    /// The function that allocated the most bytes: the innermost frame of each sample
    /// outside the standard library ([`is_std_frame`]) and the allocator wrapper.
    pub top_allocator: Option<String>,
}

/// Sums the allocated bytes (`alloc_space`) and objects (`alloc_objects`) per
/// `span_name` over `profiles`: the `*.alloc.pb.gz` files that `ProfiledAllocator`'s
/// windows are written to. A profile without those sample types (a CPU profile) is an
/// error ([`FlamegraphError::NoSampleType`]).
///
/// ```no_run
/// use span_profiler::flamegraph::{summarize_allocations, Profile};
///
/// let profiles = vec![Profile::read("./profiles/app-1234-1700000000000.alloc.pb.gz")?];
/// for span in summarize_allocations(&profiles)?.spans {
///     println!("{}: {} bytes in {} allocations", span.span_name, span.bytes, span.objects);
/// }
/// # Ok::<(), span_profiler::flamegraph::FlamegraphError>(())
/// ```
pub fn summarize_allocations(profiles: &[Profile]) -> Result<AllocSummary, FlamegraphError> {
    #[derive(Default)]
    struct Acc {
        bytes: u64,
        objects: u64,
        ids: HashSet<Rc<str>>,
        functions: HashMap<Rc<str>, u64>,
    }
    let mut by_name: HashMap<Rc<str>, Acc> = HashMap::new();
    let (mut total, mut unlabelled) = (0u64, 0u64);
    for profile in profiles {
        let bytes = Stacks::read(profile, &SampleFilter::All, Pick::Named("alloc_space"))?;
        let objects = Stacks::read(profile, &SampleFilter::All, Pick::Named("alloc_objects"))?;
        // Each reading skips its own zero values, so objects and bytes are summed
        // separately.
        for stack in &objects.stacks {
            if let Some(name) = &stack.span_name {
                let acc = by_name.entry(name.clone()).or_default();
                acc.objects = acc.objects.saturating_add(stack.value);
            }
        }
        for stack in &bytes.stacks {
            total = total.saturating_add(stack.value);
            match &stack.span_name {
                Some(name) => {
                    let acc = by_name.entry(name.clone()).or_default();
                    acc.bytes = acc.bytes.saturating_add(stack.value);
                    *acc.functions.entry(allocating_frame(stack)).or_default() += stack.value;
                    if let Some(id) = &stack.span_id {
                        acc.ids.insert(id.clone());
                    }
                }
                None => unlabelled = unlabelled.saturating_add(stack.value),
            }
        }
    }
    let mut spans: Vec<SpanAllocations> = by_name
        .into_iter()
        .map(|(name, acc)| SpanAllocations {
            span_name: name.to_string(),
            requests: acc.ids.len(),
            bytes: acc.bytes,
            objects: acc.objects,
            // Ties go to the smaller name, so the answer does not depend on hash order.
            top_allocator: acc
                .functions
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(f, _)| f.to_string()),
        })
        .collect();
    spans.sort_by(|a, b| {
        b.bytes
            .cmp(&a.bytes)
            .then_with(|| a.span_name.cmp(&b.span_name))
    });
    Ok(AllocSummary {
        spans,
        unlabelled_bytes: unlabelled,
        total_bytes: total,
    })
}

/// The innermost frame of an allocation's stack outside the standard library and the
/// allocator wrapper (`span_profiler::alloc::`, std's `__rust_alloc` shims), else its
/// leaf.
fn allocating_frame(stack: &Stack) -> Rc<str> {
    let plumbing = |name: &str| {
        let inner = name.trim_start_matches('<');
        inner.starts_with("span_profiler::alloc::")
            || inner.starts_with("__rust")
            || inner.starts_with("__rdl_")
            || inner.starts_with("__rg_")
    };
    stack
        .frames
        .iter()
        .find(|f| !f.is_std && !is_std_frame(&f.name) && !plumbing(&f.name))
        .or_else(|| stack.frames.first())
        .map_or_else(|| "?".into(), |f| f.name.clone())
}
