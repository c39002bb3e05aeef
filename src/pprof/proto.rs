//! The messages of pprof's `profile.proto` (github.com/google/pprof, `proto/profile.proto`),
//! written by hand as `prost` derives: no `protoc` at build time.
//!
//! Field numbers and types follow the `.proto` file exactly. Every `int64` that names a
//! string is an index into [`Profile::string_table`]; ids (`uint64`) are nonzero and
//! unique per table.

/// A whole profile.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Profile {
    /// What each value of a sample measures (for CPU: `samples/count`, `cpu/nanoseconds`).
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    /// Loaded modules the locations point into; ids start at 1.
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    /// Code addresses with their functions and lines.
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    /// Functions referenced by the locations' lines.
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    /// All strings; index 0 is always `""`.
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    /// Regular expression of frames to drop (string index).
    #[prost(int64, tag = "7")]
    pub drop_frames: i64,
    /// Regular expression of frames to keep (string index).
    #[prost(int64, tag = "8")]
    pub keep_frames: i64,
    /// When the profile was taken, nanoseconds since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    /// How long it covers, in nanoseconds.
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    /// What `period` measures (for CPU: `cpu/nanoseconds`).
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    /// Sampling period (for CPU: nanoseconds between samples, 1e9 / Hz).
    #[prost(int64, tag = "12")]
    pub period: i64,
    /// Free-form comments (string indices).
    #[prost(int64, repeated, tag = "13")]
    pub comment: Vec<i64>,
    /// Preferred sample type for display (string index).
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
    /// Documentation link for the profile (string index).
    #[prost(int64, tag = "15")]
    pub doc_url: i64,
}

/// A type and a unit, both string indices.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct ValueType {
    /// Type name (string index), e.g. `cpu`.
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    /// Unit (string index), e.g. `nanoseconds`.
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// One stack with its values and labels.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    /// Location ids, leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    /// One value per `Profile::sample_type`.
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    /// Labels of this sample.
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

/// A sample label: a string (`str`) or a number (`num`, with `num_unit`).
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Label {
    /// Key (string index).
    #[prost(int64, tag = "1")]
    pub key: i64,
    /// String value (string index); 0 when the label is numeric.
    #[prost(int64, tag = "2")]
    pub str: i64,
    /// Numeric value.
    #[prost(int64, tag = "3")]
    pub num: i64,
    /// Unit of `num` (string index).
    #[prost(int64, tag = "4")]
    pub num_unit: i64,
}

/// A loaded module (executable or shared library).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Mapping {
    /// Nonzero, unique id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// First address of the mapped executable code.
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    /// One past its last address.
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    /// Offset in the file that `memory_start` maps.
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    /// Path of the file (string index).
    #[prost(int64, tag = "5")]
    pub filename: i64,
    /// Build id, lowercase hex (string index).
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    /// Function names are present for this mapping's locations.
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    /// File names are present.
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    /// Line numbers are present.
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    /// Inlined frames are present.
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// A code address and the (possibly inlined) functions at it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Location {
    /// Nonzero, unique id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// The mapping it lies in, 0 for none.
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    /// The instruction address (for callers: the return address minus one).
    #[prost(uint64, tag = "3")]
    pub address: u64,
    /// Functions at the address, innermost inlined callee first, the real function last.
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
    /// Several symbols were folded into this location by the linker.
    #[prost(bool, tag = "5")]
    pub is_folded: bool,
}

/// One function and line of a location.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Line {
    /// The function (a `Function::id`).
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    /// Line number in the function's file, 0 when unknown.
    #[prost(int64, tag = "2")]
    pub line: i64,
    /// Column, 0 when unknown.
    #[prost(int64, tag = "3")]
    pub column: i64,
}

/// A function.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct Function {
    /// Nonzero, unique id.
    #[prost(uint64, tag = "1")]
    pub id: u64,
    /// Human-readable name (string index), demangled.
    #[prost(int64, tag = "2")]
    pub name: i64,
    /// Name as the symbol table has it, mangled (string index).
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    /// Source file (string index).
    #[prost(int64, tag = "4")]
    pub filename: i64,
    /// Line where the function starts, 0 when unknown.
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}
