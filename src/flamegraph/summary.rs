use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use super::stacks::{Pick, Stack, Stacks};
use super::{FlamegraphError, Profile, SampleFilter};

/// CPU time per span name and per request over a set of profiles: what [`summarize`]
/// returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// One entry per `span_name`, most CPU first.
    pub spans: Vec<SpanSummary>,
    /// One entry per `span_id` (a request's local root span), most CPU first.
    pub requests: Vec<RequestSummary>,
    /// CPU of samples without a `span_name` (work outside any profiled span).
    pub unlabelled_cpu: Duration,
    /// CPU of all samples.
    pub total_cpu: Duration,
}

/// CPU of one span name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpanSummary {
    /// The `span_name` label, e.g. `GET /orders/{id}`.
    pub span_name: String,
    /// Distinct `span_id`s seen with this name: the requests that were sampled by the
    /// tracer and burned at least one profiler sample. Short requests that no sample hit
    /// are not counted, so this is a lower bound of the real request count.
    pub requests: usize,
    /// CPU time of all samples with this name (the `cpu/nanoseconds` values).
    pub cpu: Duration,
    /// The function with the most CPU at the top of the stack, see [`is_std_frame`];
    /// `None` only when there is no sample.
    pub hottest_function: Option<String>,
    /// The CPU time of `hottest_function` in this span name.
    pub hottest_function_cpu: Duration,
}

impl SpanSummary {
    /// `cpu / requests` (`None` without requests).
    pub fn cpu_per_request(&self) -> Option<Duration> {
        u32::try_from(self.requests)
            .ok()
            .filter(|&n| n > 0)
            .map(|n| self.cpu / n)
    }
}

/// CPU of one request (one `span_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestSummary {
    /// The span id.
    pub span_id: u64,
    /// Its `span_name`, when the samples carry one.
    pub span_name: Option<String>,
    /// CPU time of its samples.
    pub cpu: Duration,
    /// Its hottest function, as in [`SpanSummary::hottest_function`].
    pub hottest_function: Option<String>,
}

/// Sums CPU time per `span_name` and per `span_id` over `profiles` (e.g. all files of a
/// run, from [`Profile::read_dir`]) and finds each one's hottest function.
///
/// Every profile must have a `cpu/nanoseconds` sample type ([`FlamegraphError::NoCpuValue`]).
pub fn summarize(profiles: &[Profile]) -> Result<Summary, FlamegraphError> {
    #[derive(Default)]
    struct Acc {
        cpu: u64,
        ids: HashSet<Rc<str>>,
        functions: HashMap<Rc<str>, u64>,
        name: Option<Rc<str>>,
    }
    let mut by_name: HashMap<Rc<str>, Acc> = HashMap::new();
    let mut by_id: HashMap<u64, Acc> = HashMap::new();
    let (mut total, mut unlabelled) = (0u64, 0u64);
    for profile in profiles {
        let stacks = Stacks::read(profile, &SampleFilter::All, Pick::Cpu)?;
        for stack in &stacks.stacks {
            total = total.saturating_add(stack.value);
            let hot = hottest_frame(stack);
            let span_id = stack.span_id.as_deref().and_then(super::parse_span_id);
            match &stack.span_name {
                Some(name) => {
                    let acc = by_name.entry(name.clone()).or_default();
                    acc.cpu = acc.cpu.saturating_add(stack.value);
                    *acc.functions.entry(hot.clone()).or_default() += stack.value;
                    if let Some(id) = &stack.span_id {
                        acc.ids.insert(id.clone());
                    }
                }
                None => unlabelled = unlabelled.saturating_add(stack.value),
            }
            if let Some(id) = span_id {
                let acc = by_id.entry(id).or_default();
                acc.cpu = acc.cpu.saturating_add(stack.value);
                *acc.functions.entry(hot).or_default() += stack.value;
                if acc.name.is_none() {
                    acc.name = stack.span_name.clone();
                }
            }
        }
    }
    let hottest = |functions: &HashMap<Rc<str>, u64>| {
        // Ties go to the smaller name, so the answer does not depend on hash order.
        functions
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(f, cpu)| (f.to_string(), *cpu))
    };
    let mut spans: Vec<SpanSummary> = by_name
        .into_iter()
        .map(|(name, acc)| {
            let hot = hottest(&acc.functions);
            SpanSummary {
                span_name: name.to_string(),
                requests: acc.ids.len(),
                cpu: Duration::from_nanos(acc.cpu),
                hottest_function_cpu: Duration::from_nanos(hot.as_ref().map_or(0, |h| h.1)),
                hottest_function: hot.map(|h| h.0),
            }
        })
        .collect();
    spans.sort_by(|a, b| {
        b.cpu
            .cmp(&a.cpu)
            .then_with(|| a.span_name.cmp(&b.span_name))
    });
    let mut requests: Vec<RequestSummary> = by_id
        .into_iter()
        .map(|(span_id, acc)| RequestSummary {
            span_id,
            span_name: acc.name.map(|n| n.to_string()),
            cpu: Duration::from_nanos(acc.cpu),
            hottest_function: hottest(&acc.functions).map(|h| h.0),
        })
        .collect();
    requests.sort_by(|a, b| b.cpu.cmp(&a.cpu).then_with(|| a.span_id.cmp(&b.span_id)));
    Ok(Summary {
        spans,
        requests,
        unlabelled_cpu: Duration::from_nanos(unlabelled),
        total_cpu: Duration::from_nanos(total),
    })
}

/// The innermost frame of `stack` that is not in Rust's standard library, else its leaf.
fn hottest_frame(stack: &Stack) -> Rc<str> {
    stack
        .frames
        .iter()
        .find(|f| !f.is_std)
        .or_else(|| stack.frames.first())
        .map_or_else(|| "?".into(), |f| f.name.clone())
}

/// Whether a frame name belongs to Rust's standard library (`core::`, `alloc::`, `std::`,
/// `compiler_builtins::`, including their trait impls such as
/// `<core::ops::Range<u64> as core::iter::Iterator>::next` or
/// `<u64 as core::iter::Step>::forward`).
///
/// A sample's *hottest function* is its innermost frame that is not in the standard
/// library, by this test on its name or by its source file (under `library/core`,
/// `library/alloc` or `library/std`, for profiles whose inlined functions carry no path,
/// e.g. `rotate_left<u64>`). The real leaf
/// is often `core::num::<impl u64>::wrapping_mul` or `core::hint::black_box`, which says
/// nothing about where the application spends its time. Other libraries' frames (tokio,
/// libc) count as functions.
pub fn is_std_frame(name: &str) -> bool {
    const STD: [&str; 4] = ["core::", "alloc::", "std::", "compiler_builtins::"];
    let is_std_path = |s: &str| STD.iter().any(|p| s.starts_with(p));
    let inner = name.trim_start_matches('<');
    if is_std_path(inner) {
        return true;
    }
    // `<T as core::Trait>::f` with `T` a primitive (or a slice/array/ref of one).
    if name.starts_with('<') {
        if let Some((ty, tr)) = inner.split_once(" as ") {
            let primitive = !ty.contains("::")
                && ty
                    .trim_start_matches(['&', '[', '*'])
                    .trim_start_matches("mut ")
                    .trim_start_matches("const ")
                    .starts_with(|c: char| c.is_ascii_lowercase());
            return primitive && is_std_path(tr);
        }
    }
    false
}
