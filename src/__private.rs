//! Internals reachable from integration tests and loom models. Not a public API.

pub use crate::labels::registry::{LabelHandle, Registry, RegistryLen};
pub use crate::labels::set::LabelSet;

/// The label id in force on this thread (what the signal handler would read).
pub fn current_label_id() -> u64 {
    crate::labels::slot::current()
}

/// The label id a wrapper applies (0 for none).
pub fn label_id_of<F>(profiled: &crate::Profiled<F>) -> u64 {
    profiled.label_id()
}

/// Sizes of the global registry (live and retired entries).
pub fn global_registry_len() -> RegistryLen {
    Registry::global().len()
}
