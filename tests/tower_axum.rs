//! `ProfileLayer` on a real axum server over 127.0.0.1, driven by a real HTTP client
//! (hyper-util): two routes burn CPU in distinct functions under many concurrent
//! requests; the profile files must attribute each function's samples to the span ids of
//! its own route's requests. A client-sent `traceparent` becomes the remote parent.

mod common;
mod span_profiles;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::Context;
use span_profiler::{Labels, ProfileLayer, Profiler, PROFILE_ID_ATTRIBUTE};
use span_profiles::*;
use tower::{Layer as _, Service as _};

const SERVICE: &str = "tower-axum-test";
const SLICES: usize = 8;
const SLICE: Duration = Duration::from_millis(1);

#[inline(never)]
fn burn_orders_route(slice: Duration) {
    spin_cpu(slice);
}

#[inline(never)]
fn burn_search_route(slice: Duration) {
    spin_cpu(slice);
}

async fn orders() -> &'static str {
    for _ in 0..SLICES {
        burn_orders_route(SLICE);
        tokio::task::yield_now().await;
    }
    "order"
}

async fn search() -> &'static str {
    for _ in 0..SLICES {
        burn_search_route(SLICE);
        tokio::task::yield_now().await;
    }
    "results"
}

/// The labels in force while the handler runs, after an await.
async fn labels() -> String {
    tokio::task::yield_now().await;
    let labels = Labels::current();
    format!(
        "{} {}",
        labels.span_id_hex().unwrap_or_default(),
        labels.span_name().unwrap_or_default()
    )
}

/// Serves the app on a 4-worker runtime; returns its address.
fn serve(rt: &tokio::runtime::Runtime) -> SocketAddr {
    let app: Router = Router::new()
        .route("/orders/{id}", get(orders))
        .route("/search/{term}", get(search))
        .route("/labels/{x}", get(labels))
        .layer(ProfileLayer::new());
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    })
}

fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn fetch(client: &HttpClient, uri: String, traceparent: Option<&str>) -> String {
    let mut req = http::Request::get(uri);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let res = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[test]
fn each_routes_cpu_carries_the_span_ids_of_that_routes_requests() {
    let exporter = install_global(SERVICE);
    let _lock = profiler_lock();
    let dir = temp_dir("tower-axum");
    let rt = server_runtime();
    let addr = serve(&rt);
    let profiler = Profiler::builder()
        .application_name(SERVICE)
        .sample_rate(1000)
        .upload_interval(Duration::from_secs(1))
        .output_dir(&dir)
        .start()
        .expect("profiler starts");

    // 24 concurrent clients, 10 requests each, alternating routes.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        let mut tasks = Vec::new();
        for c in 0..24 {
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    let uri = if (c + i) % 2 == 0 {
                        format!("http://{addr}/orders/{}", c * 100 + i)
                    } else {
                        format!("http://{addr}/search/q{}", c * 100 + i)
                    };
                    fetch(&client, uri, None).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    profiler.stop().expect("profiler stops");

    let ids = |name: &str| -> HashSet<String> {
        let spans = spans_named(&exporter, name);
        for s in &spans {
            assert_eq!(s.span_kind, SpanKind::Server);
            let id = s.span_context.span_id().to_string();
            assert_eq!(attr(s, PROFILE_ID_ATTRIBUTE), Some(id));
            assert_eq!(attr(s, "http.response.status_code").as_deref(), Some("200"));
            assert_eq!(attr(s, "http.request.method").as_deref(), Some("GET"));
        }
        spans
            .iter()
            .map(|s| s.span_context.span_id().to_string())
            .collect()
    };
    let orders_ids = ids("GET /orders/{id}");
    let search_ids = ids("GET /search/{term}");
    assert_eq!(orders_ids.len(), 120, "one server span per orders request");
    assert_eq!(search_ids.len(), 120, "one server span per search request");

    assert_attributed(
        &all_samples(&dir),
        &[
            Expect {
                function: "burn_orders_route",
                span_name: "GET /orders/{id}",
                span_ids: &orders_ids,
            },
            Expect {
                function: "burn_search_route",
                span_name: "GET /search/{term}",
                span_ids: &search_ids,
            },
        ],
        50,
    );
}

#[test]
fn a_client_traceparent_becomes_the_remote_parent_of_the_server_span() {
    let exporter = install_global(SERVICE);
    // Not during the profiled test: its requests are not that test's.
    let _lock = profiler_lock();
    let rt = server_runtime();
    let addr = serve(&rt);
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    let body = rt.block_on(async {
        let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
        fetch(
            &client,
            format!("http://{addr}/labels/7"),
            Some(&traceparent),
        )
        .await
    });

    let spans: Vec<_> = spans_named(&exporter, "GET /labels/{x}")
        .into_iter()
        .filter(|s| s.span_context.trace_id().to_string() == trace_id)
        .collect();
    assert_eq!(spans.len(), 1, "one server span in the client's trace");
    let span = &spans[0];
    assert_eq!(span.parent_span_id.to_string(), parent_id);
    assert!(span.parent_span_is_remote);
    let own_id = span.span_context.span_id().to_string();
    assert_eq!(attr(span, PROFILE_ID_ATTRIBUTE), Some(own_id.clone()));
    assert_eq!(attr(span, "http.route").as_deref(), Some("/labels/{x}"));
    assert_eq!(attr(span, "url.path").as_deref(), Some("/labels/7"));
    // The handler, after an await, ran under the server span's labels (not the remote
    // parent's id, which has no profile in this process).
    assert_eq!(body, format!("{own_id} GET /labels/{{x}}"));
}

#[test]
fn a_span_made_by_an_outer_layer_is_reused_not_replaced() {
    let exporter = install_global(SERVICE);
    let tracer = opentelemetry::global::tracer("outer-layer");
    let outer = Context::current_with_span(tracer.start("outer request span"));
    let outer_id = outer.span().span_context().span_id();

    let handler = tower::service_fn(|_req: http::Request<()>| async {
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(http::Response::new(Labels::current()))
    });
    let mut service = ProfileLayer::new().layer(handler);
    let future = {
        let _attached = outer.clone().attach();
        service.call(http::Request::new(()))
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let labels = rt.block_on(future).unwrap().into_body();
    assert_eq!(labels.span_id_hex(), Some(outer_id.to_string()));
    assert_eq!(labels.span_name(), Some("outer request span"));

    outer.span().end();
    let spans = exporter.get_finished_spans().unwrap();
    let in_trace: Vec<_> = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == outer.span().span_context().trace_id())
        .collect();
    assert_eq!(in_trace.len(), 1, "no second server span: {in_trace:?}");
}
