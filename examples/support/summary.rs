//! Shared by the axum, tonic and tracing examples: reads this run's profile files back
//! and prints the CPU time per `span_name`, with the number of distinct span ids.

use std::path::Path;

use span_profiler::flamegraph::{summarize, Profile};

/// Prints CPU per span name from the files `application`'s profiler (this process)
/// wrote to `dir`.
pub fn print_cpu_by_span_name(
    dir: &Path,
    application: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let prefix = format!("{}-{}-", application.replace('/', "_"), std::process::id());
    let mut profiles = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with(&prefix) && name.ends_with(".pb.gz") {
            profiles.push(Profile::read(&path)?);
        }
    }
    println!("{} profile files in {}", profiles.len(), dir.display());
    println!("{:<28} {:>8} {:>9}", "span_name", "CPU ms", "span ids");
    if profiles.is_empty() {
        return Ok(());
    }
    let summary = summarize(&profiles)?;
    for span in &summary.spans {
        println!(
            "{:<28} {:>8} {:>9}",
            span.span_name,
            span.cpu.as_millis(),
            span.requests
        );
    }
    println!(
        "{:<28} {:>8}",
        "(no span)",
        summary.unlabelled_cpu.as_millis()
    );
    Ok(())
}
