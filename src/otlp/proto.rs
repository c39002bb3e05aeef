//! The OTLP profiles messages the exporter writes, as prost derives (no protoc, no gRPC).
//!
//! Pinned to opentelemetry-proto **v1.10.0** (`profiles/v1development`, Alpha; Go modules
//! `go.opentelemetry.io/proto/otlp` v1.10.0 and `.../profiles/v1development` v0.3.0), the
//! version Grafana Pyroscope's OTLP ingester decodes. Alpha field numbers have moved
//! between releases: each field below carries the number of that release. The messages
//! and field numbers come from opentelemetry-proto (Apache License 2.0); only the fields
//! the exporter writes are declared (protobuf readers skip nothing they need: absent
//! fields are zero values).

/// `opentelemetry.proto.collector.profiles.v1development.ExportProfilesServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ExportProfilesServiceRequest {
    /// One resource here (this process).
    #[prost(message, repeated, tag = "1")]
    pub resource_profiles: Vec<ResourceProfiles>,
    /// Tables shared by every profile of the request; index 0 of each is the zero value.
    #[prost(message, optional, tag = "2")]
    pub dictionary: Option<ProfilesDictionary>,
}

/// `opentelemetry.proto.profiles.v1development.ProfilesDictionary`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ProfilesDictionary {
    /// Mappings (loaded objects).
    #[prost(message, repeated, tag = "1")]
    pub mapping_table: Vec<Mapping>,
    /// Locations (addresses with their lines).
    #[prost(message, repeated, tag = "2")]
    pub location_table: Vec<Location>,
    /// Functions.
    #[prost(message, repeated, tag = "3")]
    pub function_table: Vec<Function>,
    /// Links from samples to spans.
    #[prost(message, repeated, tag = "4")]
    pub link_table: Vec<Link>,
    /// Strings; `string_table[0] == ""`.
    #[prost(string, repeated, tag = "5")]
    pub string_table: Vec<String>,
    /// Attributes of samples and mappings.
    #[prost(message, repeated, tag = "6")]
    pub attribute_table: Vec<KeyValueAndUnit>,
    /// Stacks (location indices, leaf first).
    #[prost(message, repeated, tag = "7")]
    pub stack_table: Vec<Stack>,
}

/// `opentelemetry.proto.profiles.v1development.ResourceProfiles`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ResourceProfiles {
    /// The process's resource.
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    /// One scope: this crate.
    #[prost(message, repeated, tag = "2")]
    pub scope_profiles: Vec<ScopeProfiles>,
    /// Semantic-conventions schema of the resource attributes.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `opentelemetry.proto.resource.v1.Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Resource {
    /// `service.name`, `process.*`, `telemetry.sdk.*`, ...
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `opentelemetry.proto.profiles.v1development.ScopeProfiles`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ScopeProfiles {
    /// The instrumentation scope (this crate).
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    /// One CPU profile.
    #[prost(message, repeated, tag = "2")]
    pub profiles: Vec<Profile>,
    /// Unused.
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `opentelemetry.proto.common.v1.InstrumentationScope`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct InstrumentationScope {
    /// Scope name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Scope version.
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `opentelemetry.proto.common.v1.KeyValue` (inline key, for resource attributes).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct KeyValue {
    /// Attribute key.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Attribute value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `opentelemetry.proto.common.v1.AnyValue` (the two kinds written here).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AnyValue {
    /// The value.
    #[prost(oneof = "any_value::Value", tags = "1, 3")]
    pub value: Option<any_value::Value>,
}

/// The `value` oneof of [`AnyValue`].
pub(crate) mod any_value {
    /// `AnyValue.value`.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Value {
        /// `string_value`.
        #[prost(string, tag = "1")]
        StringValue(String),
        /// `int_value`.
        #[prost(int64, tag = "3")]
        IntValue(i64),
    }
}

/// `opentelemetry.proto.profiles.v1development.Profile`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Profile {
    /// What the values count: `samples/count` here.
    #[prost(message, optional, tag = "1")]
    pub sample_type: Option<ValueType>,
    /// The samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Window start.
    #[prost(fixed64, tag = "3")]
    pub time_unix_nano: u64,
    /// Window length.
    #[prost(uint64, tag = "4")]
    pub duration_nano: u64,
    /// `cpu/nanoseconds`.
    #[prost(message, optional, tag = "5")]
    pub period_type: Option<ValueType>,
    /// Nanoseconds between samples.
    #[prost(int64, tag = "6")]
    pub period: i64,
    /// 16 random bytes identifying the profile.
    #[prost(bytes = "vec", tag = "7")]
    pub profile_id: Vec<u8>,
}

/// `opentelemetry.proto.profiles.v1development.Link`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub(crate) struct Link {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
}

/// `opentelemetry.proto.profiles.v1development.ValueType`.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub(crate) struct ValueType {
    /// Index into the string table.
    #[prost(int32, tag = "1")]
    pub type_strindex: i32,
    /// Index into the string table.
    #[prost(int32, tag = "2")]
    pub unit_strindex: i32,
}

/// `opentelemetry.proto.profiles.v1development.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Sample {
    /// Index into the stack table.
    #[prost(int32, tag = "1")]
    pub stack_index: i32,
    /// Indices into the attribute table.
    #[prost(int32, repeated, tag = "2")]
    pub attribute_indices: Vec<i32>,
    /// Index into the link table (0: no link).
    #[prost(int32, tag = "3")]
    pub link_index: i32,
    /// One value per sample type: the sample count.
    #[prost(int64, repeated, tag = "4")]
    pub values: Vec<i64>,
}

/// `opentelemetry.proto.profiles.v1development.Mapping`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Mapping {
    /// Start address.
    #[prost(uint64, tag = "1")]
    pub memory_start: u64,
    /// End address.
    #[prost(uint64, tag = "2")]
    pub memory_limit: u64,
    /// File offset of `memory_start`.
    #[prost(uint64, tag = "3")]
    pub file_offset: u64,
    /// Index into the string table.
    #[prost(int32, tag = "4")]
    pub filename_strindex: i32,
    /// Indices into the attribute table (the build id).
    #[prost(int32, repeated, tag = "5")]
    pub attribute_indices: Vec<i32>,
}

/// `opentelemetry.proto.profiles.v1development.Stack`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub(crate) struct Stack {
    /// Indices into the location table, leaf first.
    #[prost(int32, repeated, tag = "1")]
    pub location_indices: Vec<i32>,
}

/// `opentelemetry.proto.profiles.v1development.Location`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Location {
    /// Index into the mapping table (0: unknown).
    #[prost(int32, tag = "1")]
    pub mapping_index: i32,
    /// Instruction address.
    #[prost(uint64, tag = "2")]
    pub address: u64,
    /// Lines, callee (innermost inlined frame) first.
    #[prost(message, repeated, tag = "3")]
    pub lines: Vec<Line>,
}

/// `opentelemetry.proto.profiles.v1development.Line`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Line {
    /// Index into the function table.
    #[prost(int32, tag = "1")]
    pub function_index: i32,
    /// Line number (0: unknown).
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// `opentelemetry.proto.profiles.v1development.Function`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Function {
    /// Index into the string table: the demangled name.
    #[prost(int32, tag = "1")]
    pub name_strindex: i32,
    /// Index into the string table: the mangled name.
    #[prost(int32, tag = "2")]
    pub system_name_strindex: i32,
    /// Index into the string table: the source file.
    #[prost(int32, tag = "3")]
    pub filename_strindex: i32,
    /// First line of the function.
    #[prost(int64, tag = "4")]
    pub start_line: i64,
}

/// `opentelemetry.proto.profiles.v1development.KeyValueAndUnit`.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct KeyValueAndUnit {
    /// Index into the string table.
    #[prost(int32, tag = "1")]
    pub key_strindex: i32,
    /// The value.
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
    /// Index into the string table (0: no unit).
    #[prost(int32, tag = "3")]
    pub unit_strindex: i32,
}
