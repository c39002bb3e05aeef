//! Interned strings with their heap bytes counted: one `Arc<str>` per distinct text, the
//! copies handed out sharing it, and the texts no copy holds any more dropped on request.

use std::collections::HashSet;
use std::sync::Arc;

use crate::id_hash::NameHashBuilder;
use crate::symbolize::{allocation_bytes, sparse, table_bytes};

/// Heap bytes of one `Arc<str>` (one allocation: the counts and the text).
pub(crate) fn string_bytes(s: &str) -> usize {
    allocation_bytes(s.len() + 2 * std::mem::size_of::<usize>())
}

/// A set of interned strings and the heap bytes it holds.
#[derive(Debug, Default)]
pub(crate) struct StringSet {
    set: HashSet<Arc<str>, NameHashBuilder>,
    /// Heap bytes of the strings (not of the set's table).
    bytes: usize,
}

impl StringSet {
    /// The shared copy of `s`, made the first time.
    pub(crate) fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(hit) = self.set.get(s) {
            return hit.clone();
        }
        let arc: Arc<str> = Arc::from(s);
        self.bytes += string_bytes(s);
        self.set.insert(arc.clone());
        arc
    }

    /// Heap bytes held, the table included.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.bytes + table_bytes::<Arc<str>>(self.set.capacity())
    }

    /// Distinct strings held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    /// The strings held.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.set.iter()
    }

    /// Drops the strings that no copy outside the set holds (call it while no caller
    /// holds a copy it still needs counted), and the table's memory when it is sparse or
    /// empty.
    pub(crate) fn sweep(&mut self) {
        let mut freed = 0;
        self.set.retain(|s| {
            let keep = Arc::strong_count(s) > 1;
            if !keep {
                freed += string_bytes(s);
            }
            keep
        });
        self.bytes -= freed;
        if self.set.is_empty() || sparse(self.set.capacity(), self.set.len()) {
            self.set.shrink_to_fit();
        }
    }

    /// Drops every string and the table.
    pub(crate) fn clear(&mut self) {
        self.set = HashSet::default();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_is_kept_once_and_goes_when_no_copy_holds_it() {
        let mut set = StringSet::default();
        let a = set.intern("tokio::runtime::task::raw::poll");
        let b = set.intern("tokio::runtime::task::raw::poll");
        assert!(Arc::ptr_eq(&a, &b));
        let c = set.intern("core::ptr::drop_in_place");
        assert_eq!(set.len(), 2);
        let strings = string_bytes(&a) + string_bytes(&c);
        assert_eq!(
            set.heap_bytes(),
            strings + table_bytes::<Arc<str>>(set.set.capacity())
        );
        drop((a, b));
        set.sweep();
        assert_eq!(set.len(), 1);
        assert_eq!(set.bytes, string_bytes(&c));
        drop(c);
        set.sweep();
        assert_eq!(set.heap_bytes(), 0, "an empty set keeps no table");
    }
}
