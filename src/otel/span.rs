//! The span: the inner tracer's span plus ownership of its span-id map entry.

use std::borrow::Cow;
use std::error::Error;
use std::time::SystemTime;

use opentelemetry::trace::{Span, SpanContext, Status};
use opentelemetry::KeyValue;

use super::map;

/// A span built by [`ProfilingTracer`](crate::ProfilingTracer): behaves exactly like the
/// wrapped span. Its labels stay findable until the span object is dropped (for a span
/// held in a `Context`, when the last `Context` holding it is gone), not only until it
/// ends: work that outlives a response (a task spawned by the handler that starts a
/// child span, or a new [`.profiled()`] under the ended span's context) keeps the local
/// root's labels, as otel-profiling-go's context-held labels do in Go. Grafana's span
/// query covers 60 s after the span's end, so such work is still found from the trace.
///
/// [`.profiled()`]: crate::ProfiledExt::profiled
#[derive(Debug)]
pub struct ProfilingSpan<S> {
    pub(super) inner: S,
    /// The span id whose map entry this span inserted and must remove; `None` when it
    /// owns no entry (invalid span context, an id already present, or already ended).
    pub(super) entry: Option<u64>,
    /// A local root's task metrics, written on the span when it ends (feature
    /// `task-metrics`); `None` for other spans and once written.
    #[cfg(feature = "task-metrics")]
    recorder: Option<super::metrics::Recorder<S>>,
}

impl<S> ProfilingSpan<S> {
    pub(crate) fn new(inner: S, entry: Option<u64>) -> Self {
        Self {
            inner,
            entry,
            #[cfg(feature = "task-metrics")]
            recorder: None,
        }
    }

    #[cfg(feature = "task-metrics")]
    pub(crate) fn set_recorder(&mut self, recorder: Option<super::metrics::Recorder<S>>) {
        self.recorder = recorder;
    }

    /// The wrapped span.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// What happens once when the span ends: a local root gets its task metrics (while
    /// the inner span still records). The map entry stays until the span is dropped.
    fn finish(&mut self) {
        #[cfg(feature = "task-metrics")]
        if let Some(recorder) = self.recorder.take() {
            recorder.record(&mut self.inner);
        }
    }
}

impl<S> Drop for ProfilingSpan<S> {
    fn drop(&mut self) {
        // Before `inner` drops: an SDK span ends itself in its own `Drop`.
        self.finish();
        if let Some(id) = self.entry.take() {
            map::remove(id);
        }
    }
}

impl<S: Span> Span for ProfilingSpan<S> {
    fn add_event<T>(&mut self, name: T, attributes: Vec<KeyValue>)
    where
        T: Into<Cow<'static, str>>,
    {
        self.inner.add_event(name, attributes);
    }

    fn record_error(&mut self, err: &dyn Error) {
        self.inner.record_error(err);
    }

    fn add_event_with_timestamp<T>(
        &mut self,
        name: T,
        timestamp: SystemTime,
        attributes: Vec<KeyValue>,
    ) where
        T: Into<Cow<'static, str>>,
    {
        self.inner
            .add_event_with_timestamp(name, timestamp, attributes);
    }

    fn span_context(&self) -> &SpanContext {
        self.inner.span_context()
    }

    fn is_recording(&self) -> bool {
        self.inner.is_recording()
    }

    fn set_attribute(&mut self, attribute: KeyValue) {
        self.inner.set_attribute(attribute);
    }

    fn set_attributes(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        self.inner.set_attributes(attributes);
    }

    fn set_status(&mut self, status: Status) {
        self.inner.set_status(status);
    }

    /// Renames the span. The `span_name` label keeps the name the span was started with:
    /// label sets are immutable and work under the span may already carry it.
    fn update_name<T>(&mut self, new_name: T)
    where
        T: Into<Cow<'static, str>>,
    {
        self.inner.update_name(new_name);
    }

    fn add_link(&mut self, span_context: SpanContext, attributes: Vec<KeyValue>) {
        self.inner.add_link(span_context, attributes);
    }

    fn end(&mut self) {
        self.finish();
        self.inner.end();
    }

    fn end_with_timestamp(&mut self, timestamp: SystemTime) {
        self.finish();
        self.inner.end_with_timestamp(timestamp);
    }
}
