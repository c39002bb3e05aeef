//! From an OpenTelemetry context to labels: the lookups behind `.profiled()`,
//! `.profiled_with(&cx)` and the guard.

use opentelemetry::trace::TraceContextExt;
use opentelemetry::Context;

use super::map::RootLink;
use super::{map, span_id_u64, OTEL};
use crate::labels::registry::LabelHandle;
use crate::labels::Labels;
use crate::sampler::slot::SlotGuard;

/// The labels of the span in `cx` (its local root's set, registered), and with feature
/// `task-metrics` its local root. No labels when `cx` holds no valid span, or a span no
/// live [`ProfilingSpan`](crate::ProfilingSpan) has (ended, built by another provider, or
/// remote), which is counted.
pub(crate) fn lookup(cx: &Context) -> (Option<LabelHandle>, RootLink) {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return (None, RootLink::default());
    }
    match map::get(span_id_u64(sc)) {
        #[cfg(feature = "task-metrics")]
        Some(node) => (node.handle, node.root),
        #[cfg(not(feature = "task-metrics"))]
        Some(node) => (node.handle, ()),
        None => {
            OTEL.unknown_spans.incr();
            (None, RootLink::default())
        }
    }
}

/// [`lookup`] the context current on this thread, without cloning it.
pub(crate) fn lookup_current() -> (Option<LabelHandle>, RootLink) {
    Context::map_current(lookup)
}

/// Applies the labels of an OpenTelemetry context's span to the current thread until
/// dropped: for synchronous work under `cx.attach()`.
///
/// ```
/// use opentelemetry::Context;
/// use span_profiler::ContextLabelsGuard;
///
/// fn resize_images() {}
/// # let cx = Context::current();
/// let _otel = cx.clone().attach();
/// let _labels = ContextLabelsGuard::enter(&cx);
/// resize_images(); // samples here carry the labels of `cx`'s local root span
/// ```
///
/// **Never hold it across `.await`.** It writes the *thread's* labels: while the task is
/// suspended, other tasks polled on this thread would be sampled under these labels, and
/// the task may resume on another thread without them. For async work use
/// [`ProfiledExt::profiled`](crate::ProfiledExt::profiled) or
/// [`profiled_with`](crate::ProfiledExt::profiled_with), which apply the labels on every
/// poll. The guard is `!Send`, so a future holding it cannot be spawned on a
/// multi-thread runtime, which catches the common case at compile time.
///
/// Guards nest: dropping one restores the labels in force when it was entered.
#[must_use = "the labels are removed as soon as the guard is dropped"]
pub struct ContextLabelsGuard {
    // Declared before `_handle`: the slot is restored before the labels are released.
    _scope: SlotGuard,
    handle: Option<LabelHandle>,
}

impl ContextLabelsGuard {
    /// Applies the labels of `cx`'s span (none if the span is unknown or ended).
    pub fn enter(cx: &Context) -> Self {
        Self::with_handle(lookup(cx).0)
    }

    /// Applies the labels of the span current in `Context::current()`.
    pub fn enter_current() -> Self {
        Self::with_handle(lookup_current().0)
    }

    fn with_handle(handle: Option<LabelHandle>) -> Self {
        let id = handle.as_ref().map_or(0, LabelHandle::id);
        Self {
            _scope: SlotGuard::enter(id),
            handle,
        }
    }

    /// The labels this guard applies.
    pub fn labels(&self) -> Labels {
        Labels::from_handle(self.handle.clone())
    }
}

impl std::fmt::Debug for ContextLabelsGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = self.handle.as_ref().map_or(0, LabelHandle::id);
        f.debug_struct("ContextLabelsGuard")
            .field("label_id", &id)
            .finish()
    }
}
