//! `GET /items` throughput with `ProfiledAllocator<System>` as the global allocator and a
//! running profiler at the default allocation sampling interval (512 KiB); compare with
//! `alloc_axum_system` in interleaved runs. Run: `cargo bench --bench alloc_axum_profiled`.

use span_profiler::alloc::ProfiledAllocator;

#[path = "alloc_axum/common.rs"]
mod common;

#[global_allocator]
static ALLOC: ProfiledAllocator = ProfiledAllocator::system();

fn main() {
    let (rate, sampled) = common::run();
    println!("alloc_axum profiled: {rate:.0} requests/s ({sampled} allocations sampled)");
}
