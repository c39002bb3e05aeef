//! A tower layer for axum, tonic and any `Service<http::Request<B>>`: one server span per
//! request (or the span an outer layer already made), its labels on every poll of the
//! handler.
//!
//! See ARCHITECTURE.md "OpenTelemetry" and "Server rules the encoder and uploader obey".

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

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn the_layer_service_and_future_are_send_when_the_inner_ones_are() {
        assert_send_sync::<ProfileLayer>();
        assert_send_sync::<ProfileService<axum::Router>>();
        type Ready = std::future::Ready<Result<http::Response<()>, std::convert::Infallible>>;
        assert_send::<ProfileFuture<Ready>>();
    }
}
