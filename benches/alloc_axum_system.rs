//! `GET /items` throughput with `System` as the global allocator and a running profiler:
//! the baseline of `alloc_axum_profiled` (see `benches/README.md`, "Allocation profiler:
//! axum"). Run: `cargo bench --bench alloc_axum_system`.

#[path = "alloc_axum/common.rs"]
mod common;

fn main() {
    let (rate, _) = common::run();
    println!("alloc_axum system: {rate:.0} requests/s");
}
