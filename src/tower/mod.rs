//! A tower layer for axum, tonic and any `Service<http::Request<B>>`: one server span per
//! request (or the span an outer layer already made), its labels on every poll of the
//! handler.
//!
//! See DESIGN.md "OpenTelemetry" and PROTOCOL.md "Span linking".

/// `ProfileFuture`: applies the labels on every poll, ends the span.
mod future;
/// `ProfileLayer`.
mod layer;
/// Per request: parent context, span name, semantic-convention attributes.
mod request;
/// `ProfileService`.
mod service;

pub use future::ProfileFuture;
pub use layer::ProfileLayer;
pub use service::ProfileService;
