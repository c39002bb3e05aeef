//! Per request: the parent context, the span's name and its semantic-convention
//! attributes (OpenTelemetry HTTP and RPC server conventions).

use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method, Request, Response, Version};
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};

/// The context a request's work runs in.
pub(crate) struct Started {
    /// Holds the request's span: the one this layer started, or an outer layer's.
    pub(crate) cx: Context,
    /// Whether this layer started the span (and so must end it).
    pub(crate) owned: bool,
    /// Whether the request is gRPC (decides the attributes set at the end).
    pub(crate) grpc: bool,
    /// The local root whose task metrics the handler adds to (feature `task-metrics`);
    /// `None`: not metered.
    #[cfg(feature = "task-metrics")]
    pub(crate) task_root: crate::otel::RootLink,
}

/// Reuses the span current now if it is a valid local one (an outer layer made it),
/// else starts a server span whose parent is extracted from the headers.
pub(crate) fn start<B>(tracer: &BoxedTracer, req: &Request<B>) -> Started {
    let grpc = is_grpc(req.headers());
    let current = Context::current();
    let has_local_span = {
        let span = current.span();
        let sc = span.span_context();
        sc.is_valid() && !sc.is_remote()
    };
    if has_local_span {
        return Started {
            cx: current,
            owned: false,
            grpc,
            #[cfg(feature = "task-metrics")]
            task_root: None,
        };
    }
    let parent = global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&current, &HeaderExtractor(req.headers()))
    });
    let (name, attributes) = if grpc {
        grpc_span(req.uri().path())
    } else {
        http_span(req)
    };
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attributes)
        .start_with_context(tracer, &parent);
    Started {
        cx: parent.with_span(span),
        owned: true,
        grpc,
        #[cfg(feature = "task-metrics")]
        task_root: None,
    }
}

/// Sets the response's attributes and status on the span in `cx`.
pub(crate) fn record_response<B>(cx: &Context, grpc: bool, res: &Response<B>) {
    let span = cx.span();
    if grpc {
        // Unary errors are "trailers-only" responses with the status in the headers; the
        // status of a successful call travels in the trailers, after the body, which the
        // layer does not see.
        let code = res
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i64>().ok());
        if let Some(code) = code {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", code));
            // Server-side errors by the RPC conventions: UNKNOWN, DEADLINE_EXCEEDED,
            // UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
            if matches!(code, 2 | 4 | 12 | 13 | 14 | 15) {
                span.set_status(Status::error(format!("gRPC status {code}")));
            }
        }
    } else {
        let status = res.status().as_u16();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        // Server spans: 5xx are errors, 4xx are the client's.
        if status >= 500 {
            span.set_status(Status::error(""));
        }
    }
}

/// Marks the span in `cx` as failed: the inner service returned an error.
pub(crate) fn record_error(cx: &Context) {
    let span = cx.span();
    span.set_attribute(KeyValue::new("error.type", "_OTHER"));
    span.set_status(Status::error("the service returned an error"));
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// `{METHOD} {route}` (or `{METHOD}`) and the HTTP server attributes.
fn http_span<B>(req: &Request<B>) -> (String, Vec<KeyValue>) {
    let method = known_method(req.method());
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let mut attributes = Vec::with_capacity(6);
    attributes.push(KeyValue::new(
        "http.request.method",
        method.unwrap_or("_OTHER"),
    ));
    if method.is_none() {
        attributes.push(KeyValue::new(
            "http.request.method_original",
            req.method().as_str().to_owned(),
        ));
    }
    attributes.push(KeyValue::new("url.path", req.uri().path().to_owned()));
    attributes.push(KeyValue::new(
        "url.scheme",
        req.uri().scheme_str().unwrap_or("http").to_owned(),
    ));
    if let Some(version) = protocol_version(req.version()) {
        attributes.push(KeyValue::new("network.protocol.version", version));
    }
    // Unknown methods are named `HTTP`: their names are client input.
    let method = method.unwrap_or("HTTP");
    let name = match route {
        Some(route) => {
            let name = format!("{method} {route}");
            attributes.push(KeyValue::new("http.route", route));
            name
        }
        None => method.to_owned(),
    };
    (name, attributes)
}

/// The method path without its leading slash, and the RPC server attributes.
fn grpc_span(path: &str) -> (String, Vec<KeyValue>) {
    let mut attributes = vec![KeyValue::new("rpc.system", "grpc")];
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    match trimmed.split_once('/') {
        Some((service, method))
            if !service.is_empty() && !method.is_empty() && !method.contains('/') =>
        {
            attributes.push(KeyValue::new("rpc.service", service.to_owned()));
            attributes.push(KeyValue::new("rpc.method", method.to_owned()));
            (trimmed.to_owned(), attributes)
        }
        _ => ("grpc".to_owned(), attributes),
    }
}

/// The method's name if it is one of the standard ones (anything else is client input
/// and must not become a label value).
fn known_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return None,
    })
}

fn protocol_version(version: Version) -> Option<&'static str> {
    Some(match version {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_11 => "1.1",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => return None,
    })
}

/// Reads propagation headers (e.g. `traceparent`) from a request.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }

    fn get_all(&self, key: &str) -> Option<Vec<&str>> {
        let values: Vec<&str> = self
            .0
            .get_all(key)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then_some(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_spans_are_named_by_the_method_path_without_its_slash() {
        let (name, attrs) = grpc_span("/helloworld.Greeter/SayHello");
        assert_eq!(name, "helloworld.Greeter/SayHello");
        assert!(attrs.contains(&KeyValue::new("rpc.service", "helloworld.Greeter")));
        assert!(attrs.contains(&KeyValue::new("rpc.method", "SayHello")));
        assert_eq!(grpc_span("/a/b/c").0, "grpc");
        assert_eq!(grpc_span("/").0, "grpc");
    }

    #[test]
    fn http_spans_without_a_route_are_named_by_the_method_only() {
        let req = Request::get("/orders/12345").body(()).unwrap();
        let (name, attrs) = http_span(&req);
        assert_eq!(name, "GET");
        assert!(attrs.contains(&KeyValue::new("url.path", "/orders/12345")));
        let req = Request::builder()
            .method(Method::from_bytes(b"PURGE").unwrap())
            .uri("/x")
            .body(())
            .unwrap();
        assert_eq!(http_span(&req).0, "HTTP");
    }

    #[test]
    fn http_spans_with_a_matched_path_are_named_by_method_and_route() {
        // `MatchedPath` cannot be built outside axum: route a request through a router.
        use tower_service::Service as _;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen2 = seen.clone();
        let mut router: axum::Router = axum::Router::new().route(
            "/orders/{id}",
            axum::routing::get(move |req: Request<axum::body::Body>| {
                *seen2.lock().unwrap() = Some(http_span(&req).0);
                async { "ok" }
            }),
        );
        let req = Request::get("/orders/7")
            .body(axum::body::Body::empty())
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(router.call(req)).unwrap();
        assert_eq!(seen.lock().unwrap().as_deref(), Some("GET /orders/{id}"));
    }
}
