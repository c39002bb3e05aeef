//! A profile's samples as readable stacks: function names (inlined frames expanded,
//! unsymbolized locations named after their mapping), the `span_id` / `span_name` labels
//! and one chosen value. Every id and string index is checked: a malformed profile gives
//! `?` names, never a panic.

use std::collections::HashMap;
use std::rc::Rc;

use super::{FlamegraphError, Profile, SampleFilter};
use crate::pprof::proto;

/// What the chosen value of each sample measures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ValueKind {
    /// `cpu/nanoseconds`.
    CpuNanos,
    /// Another sample type (the profile has no `cpu/nanoseconds`): `type`, `unit`.
    Other(String, String),
}

/// One frame: a function name and whether it is Rust's standard library.
#[derive(Clone)]
pub(crate) struct Frame {
    pub(crate) name: Rc<str>,
    /// By name ([`is_std_frame`](super::is_std_frame)) or by source file (under
    /// `library/core`, `library/alloc` or `library/std`: release builds with
    /// `debug = "line-tables-only"` name inlined functions without their path).
    pub(crate) is_std: bool,
}

/// One sample, leaf first.
pub(crate) struct Stack {
    /// Frames, leaf first; inlined callees before their callers.
    pub(crate) frames: Vec<Frame>,
    pub(crate) span_id: Option<Rc<str>>,
    pub(crate) span_name: Option<Rc<str>>,
    /// The chosen value (positive).
    pub(crate) value: u64,
}

/// Which value of each sample to read.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pick<'a> {
    /// `cpu/nanoseconds`; a profile without it is an error.
    Cpu,
    /// `cpu/nanoseconds` when the profile has it, else its last sample type.
    CpuOrLast,
    /// The sample type of this name (e.g. `alloc_space`); a profile without it is an error.
    Named(&'a str),
}

/// The stacks of one profile that pass a filter.
pub(crate) struct Stacks {
    pub(crate) kind: ValueKind,
    pub(crate) stacks: Vec<Stack>,
}

impl Stacks {
    /// Reads the value `pick` of the samples of `profile` that pass `filter`.
    pub(crate) fn read(
        profile: &Profile,
        filter: &SampleFilter,
        pick: Pick<'_>,
    ) -> Result<Self, FlamegraphError> {
        let p = &profile.inner;
        let s = |i: i64| -> &str {
            usize::try_from(i)
                .ok()
                .and_then(|i| p.string_table.get(i))
                .map_or("?", String::as_str)
        };
        let cpu = p
            .sample_type
            .iter()
            .position(|vt| s(vt.r#type) == "cpu" && s(vt.unit) == "nanoseconds");
        let named = |name: &str| {
            p.sample_type
                .iter()
                .position(|vt| s(vt.r#type) == name)
                .map(|i| {
                    let vt = p.sample_type[i];
                    let kind = if s(vt.r#type) == "cpu" && s(vt.unit) == "nanoseconds" {
                        ValueKind::CpuNanos
                    } else {
                        ValueKind::Other(s(vt.r#type).into(), s(vt.unit).into())
                    };
                    (i, kind)
                })
        };
        let (index, kind) = match (pick, cpu, p.sample_type.len().checked_sub(1)) {
            (Pick::Named(name), _, _) => {
                named(name).ok_or_else(|| FlamegraphError::NoSampleType {
                    origin: profile.origin.clone(),
                    sample_type: name.to_owned(),
                })?
            }
            (_, Some(i), _) => (i, ValueKind::CpuNanos),
            (Pick::CpuOrLast, None, Some(last)) => {
                let vt = p.sample_type[last];
                (
                    last,
                    ValueKind::Other(s(vt.r#type).into(), s(vt.unit).into()),
                )
            }
            _ => {
                return Err(FlamegraphError::NoCpuValue {
                    origin: profile.origin.clone(),
                })
            }
        };

        let mut names = Names::new(p);
        let mut stacks = Vec::new();
        for sample in &p.sample {
            let value = sample
                .value
                .get(index)
                .and_then(|&v| u64::try_from(v).ok())
                .unwrap_or(0);
            if value == 0 {
                continue;
            }
            let (mut span_id, mut span_name) = (None, None);
            for label in &sample.label {
                match s(label.key) {
                    "span_id" => span_id = Some(names.string(label.str)),
                    "span_name" => span_name = Some(names.string(label.str)),
                    _ => {}
                }
            }
            if !filter.matches(span_id.as_deref(), span_name.as_deref()) {
                continue;
            }
            let mut frames = Vec::with_capacity(sample.location_id.len());
            for &id in &sample.location_id {
                frames.extend(names.location(id).iter().cloned());
            }
            if frames.is_empty() {
                frames.push(Frame {
                    name: "[no frames]".into(),
                    is_std: false,
                });
            }
            stacks.push(Stack {
                frames,
                span_id,
                span_name,
                value,
            });
        }
        Ok(Self { kind, stacks })
    }
}

/// Interned strings and per-location frame names of one profile.
struct Names<'p> {
    p: &'p proto::Profile,
    functions: HashMap<u64, &'p proto::Function>,
    mappings: HashMap<u64, &'p proto::Mapping>,
    locations: HashMap<u64, &'p proto::Location>,
    strings: HashMap<i64, Rc<str>>,
    frames: HashMap<u64, Vec<Frame>>,
}

impl<'p> Names<'p> {
    fn new(p: &'p proto::Profile) -> Self {
        Self {
            p,
            functions: p.function.iter().map(|f| (f.id, f)).collect(),
            mappings: p.mapping.iter().map(|m| (m.id, m)).collect(),
            locations: p.location.iter().map(|l| (l.id, l)).collect(),
            strings: HashMap::new(),
            frames: HashMap::new(),
        }
    }

    fn string(&mut self, i: i64) -> Rc<str> {
        let p = self.p;
        self.strings
            .entry(i)
            .or_insert_with(|| {
                usize::try_from(i)
                    .ok()
                    .and_then(|i| p.string_table.get(i))
                    .map_or("?", String::as_str)
                    .into()
            })
            .clone()
    }

    /// The frames of one location, leaf (innermost inlined function) first.
    fn location(&mut self, id: u64) -> &[Frame] {
        if !self.frames.contains_key(&id) {
            let names = self.resolve(id);
            self.frames.insert(id, names);
        }
        &self.frames[&id]
    }

    fn resolve(&mut self, id: u64) -> Vec<Frame> {
        let unknown = || Frame {
            name: "?".into(),
            is_std: false,
        };
        let Some(loc) = self.locations.get(&id).copied() else {
            return vec![unknown()];
        };
        let mut names = Vec::with_capacity(loc.line.len().max(1));
        for line in &loc.line {
            let Some(f) = self.functions.get(&line.function_id).copied() else {
                names.push(unknown());
                continue;
            };
            let name = match (f.name, f.system_name) {
                (0, 0) => "?".into(),
                (0, system) => self.string(system),
                (name, _) => self.string(name),
            };
            let file = self.string(f.filename);
            names.push(Frame {
                is_std: super::is_std_frame(&name) || is_std_file(&file),
                name,
            });
        }
        if names.is_empty() {
            // Unsymbolized: `[module+0xoffset]` (the module's file name only).
            let name = match self.mappings.get(&loc.mapping_id).copied() {
                Some(m) => {
                    let file = self.string(m.filename);
                    let base = file.rsplit('/').next().unwrap_or(&file).to_owned();
                    let offset = loc
                        .address
                        .wrapping_sub(m.memory_start)
                        .wrapping_add(m.file_offset);
                    format!("[{base}+{offset:#x}]")
                }
                None => format!("[{:#x}]", loc.address),
            };
            names.push(Frame {
                name: name.into(),
                is_std: false,
            });
        }
        names
    }
}

/// Whether a source file is part of Rust's standard library: `/rustc/<hash>/library/core/...`
/// in the shipped std, `.../rustlib/src/rust/library/std/...` with `rust-src`.
fn is_std_file(file: &str) -> bool {
    ["/library/core/", "/library/alloc/", "/library/std/"]
        .iter()
        .any(|dir| file.contains(dir))
}
