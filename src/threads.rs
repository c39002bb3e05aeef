//! Arming a thread's sampling timer as the thread starts, instead of at the collector's
//! next discovery scan.

/// Arms the calling thread's CPU timer now, if a profiler is running, so that its CPU is
/// sampled from its first instruction of work on.
///
/// Without it, a thread created while the profiler runs is found by the collector's
/// discovery scan of `/proc/self/task` within about 100 ms, or arms itself the first time
/// it runs labelled code. Call this at the start of threads that may do unlabelled work
/// sooner: Tokio's runtime threads through the stable
/// [`Builder::on_thread_start`](https://docs.rs/tokio/latest/tokio/runtime/struct.Builder.html#method.on_thread_start)
/// hook (workers and the blocking pool alike), or the first line of your own threads.
///
/// Cheap and idempotent: a thread already armed in the current session, or a call while no
/// profiler runs, returns after one atomic load. Threads armed here are counted in
/// [`SamplerCounts::timers_armed_by_thread`](crate::SamplerCounts::timers_armed_by_thread). Not for a
/// signal handler (it takes a lock and makes system calls).
///
/// # Examples
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let profiler = span_profiler::Profiler::builder()
///     .application_name("checkout")
///     .start()?;
/// let runtime = tokio::runtime::Builder::new_multi_thread()
///     .on_thread_start(span_profiler::arm_current_thread)
///     .enable_all()
///     .build()?;
/// runtime.block_on(async { /* serve */ });
/// drop(runtime);
/// profiler.stop()?;
/// # Ok(())
/// # }
/// ```
pub fn arm_current_thread() {
    crate::sampler::slot::arm_now();
}
