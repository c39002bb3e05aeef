//! Shared by the axum, tonic and tracing examples: reads this run's profile files back
//! and prints the CPU time per `span_name`, with the number of distinct span ids.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use span_profiler::__private::pprof::{decode, samples};

/// Prints CPU per span name from the files `application`'s profiler (this process)
/// wrote to `dir`.
pub fn print_cpu_by_span_name(
    dir: &Path,
    application: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let prefix = format!("{}-{}-", application.replace('/', "_"), std::process::id());
    let mut by_name: BTreeMap<String, (i64, BTreeSet<String>)> = BTreeMap::new();
    let mut files = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.starts_with(&prefix) || !name.ends_with(".pb.gz") {
            continue;
        }
        files += 1;
        for s in samples(&decode(&std::fs::read(&path)?)?) {
            let span_name = s
                .labels
                .get("span_name")
                .cloned()
                .unwrap_or_else(|| "(no span)".into());
            let entry = by_name.entry(span_name).or_default();
            entry.0 += s.values[1];
            if let Some(id) = s.labels.get("span_id") {
                entry.1.insert(id.clone());
            }
        }
    }
    println!("{files} profile files in {}", dir.display());
    println!("{:<28} {:>8} {:>9}", "span_name", "CPU ms", "span ids");
    for (name, (cpu_ns, ids)) in &by_name {
        println!("{name:<28} {:>8} {:>9}", cpu_ns / 1_000_000, ids.len());
    }
    Ok(())
}
