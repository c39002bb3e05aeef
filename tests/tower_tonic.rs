//! `ProfileLayer` on a real tonic server over 127.0.0.1, driven by a real tonic client.
//! No `protoc`: the messages are hand-written prost structs and the service and client
//! use tonic's `server::Grpc` / `client::Grpc` with `tonic_prost::ProstCodec` directly,
//! as generated code would. Two methods burn CPU in distinct functions; the profile files
//! must attribute each function's samples to the span ids of that method's calls.

mod common;
mod span_profiles;

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use http::uri::PathAndQuery;
use opentelemetry::trace::SpanKind;
use span_profiler::{Labels, ProfileLayer, Profiler, PROFILE_ID_ATTRIBUTE};
use span_profiles::*;
use tonic::server::{NamedService, UnaryService};
use tonic::transport::{Channel, Server};
use tonic_prost::ProstCodec;

const SERVICE: &str = "tower-tonic-test";
const SLICES: usize = 8;
const SLICE: Duration = Duration::from_millis(1);

#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkRequest {
    #[prost(uint64, tag = "1")]
    pub id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkReply {
    /// The `span_id` label in force in the handler after an await.
    #[prost(string, tag = "1")]
    pub span_id: String,
    #[prost(string, tag = "2")]
    pub span_name: String,
}

#[inline(never)]
fn burn_resize_rpc(slice: Duration) {
    spin_cpu(slice);
}

#[inline(never)]
fn burn_score_rpc(slice: Duration) {
    spin_cpu(slice);
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One unary method: burns CPU with `burn` in slices, answers with the labels it saw.
struct Method(fn(Duration));

impl UnaryService<WorkRequest> for Method {
    type Response = WorkReply;
    type Future = BoxFuture<Result<tonic::Response<WorkReply>, tonic::Status>>;

    fn call(&mut self, _request: tonic::Request<WorkRequest>) -> Self::Future {
        let burn = self.0;
        Box::pin(async move {
            for _ in 0..SLICES {
                burn(SLICE);
                tokio::task::yield_now().await;
            }
            let labels = Labels::current();
            Ok(tonic::Response::new(WorkReply {
                span_id: labels.span_id_hex().unwrap_or_default(),
                span_name: labels.span_name().unwrap_or_default().to_owned(),
            }))
        })
    }
}

/// The hand-written server of `media.Worker` (what tonic-build would generate).
#[derive(Clone)]
struct Worker;

impl NamedService for Worker {
    const NAME: &'static str = "media.Worker";
}

impl tower::Service<http::Request<tonic::body::Body>> for Worker {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<WorkReply, WorkRequest>::new());
            let method = match req.uri().path() {
                "/media.Worker/Resize" => Method(burn_resize_rpc),
                "/media.Worker/Score" => Method(burn_score_rpc),
                _ => return Ok(tonic::Status::unimplemented("no such method").into_http()),
            };
            Ok(grpc.unary(method, req).await)
        })
    }
}

/// Serves `media.Worker` behind `ProfileLayer` on a 4-worker runtime.
fn serve(rt: &tokio::runtime::Runtime) -> SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let router = Server::builder()
            .layer(ProfileLayer::new())
            .add_service(Worker);
        tokio::spawn(async move { router.serve_with_incoming(incoming).await.unwrap() });
        addr
    })
}

fn runtime(workers: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
}

async fn call(
    channel: Channel,
    method: &'static str,
    id: u64,
    traceparent: Option<&str>,
) -> Result<WorkReply, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(WorkRequest { id });
    if let Some(tp) = traceparent {
        request
            .metadata_mut()
            .insert("traceparent", tp.parse().unwrap());
    }
    grpc.unary(
        request,
        PathAndQuery::from_static(method),
        ProstCodec::<WorkRequest, WorkReply>::new(),
    )
    .await
    .map(tonic::Response::into_inner)
}

async fn connect(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[test]
fn each_methods_cpu_carries_the_span_ids_of_that_methods_calls() {
    let exporter = install_global(SERVICE);
    let _lock = profiler_lock();
    let dir = temp_dir("tower-tonic");
    let rt = runtime(4);
    let addr = serve(&rt);
    let profiler = Profiler::builder()
        .application_name(SERVICE)
        .sample_rate(1000)
        .upload_interval(Duration::from_secs(1))
        .output_dir(&dir)
        .start()
        .expect("profiler starts");

    // 24 concurrent callers over one HTTP/2 connection, 10 calls each.
    let client_rt = runtime(2);
    let replies = client_rt.block_on(async {
        let channel = connect(addr).await;
        let mut tasks = Vec::new();
        for c in 0..24u64 {
            let channel = channel.clone();
            tasks.push(tokio::spawn(async move {
                let mut replies = Vec::new();
                for i in 0..10 {
                    let method = if (c + i) % 2 == 0 {
                        "/media.Worker/Resize"
                    } else {
                        "/media.Worker/Score"
                    };
                    replies.push(
                        call(channel.clone(), method, c * 100 + i, None)
                            .await
                            .unwrap(),
                    );
                }
                replies
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    profiler.stop().expect("profiler stops");

    let ids = |name: &str| -> HashSet<String> {
        // Without the traceparent test's call (its parent is remote).
        let spans: Vec<_> = spans_named(&exporter, name)
            .into_iter()
            .filter(|s| !s.parent_span_is_remote)
            .collect();
        for s in &spans {
            assert_eq!(s.span_kind, SpanKind::Server);
            let id = s.span_context.span_id().to_string();
            assert_eq!(attr(s, PROFILE_ID_ATTRIBUTE), Some(id));
            assert_eq!(attr(s, "rpc.system").as_deref(), Some("grpc"));
            assert_eq!(attr(s, "rpc.service").as_deref(), Some("media.Worker"));
        }
        spans
            .iter()
            .map(|s| s.span_context.span_id().to_string())
            .collect()
    };
    let resize_ids = ids("media.Worker/Resize");
    let score_ids = ids("media.Worker/Score");
    assert_eq!(resize_ids.len(), 120, "one server span per Resize call");
    assert_eq!(score_ids.len(), 120, "one server span per Score call");
    for reply in &replies {
        let ids = match reply.span_name.as_str() {
            "media.Worker/Resize" => &resize_ids,
            "media.Worker/Score" => &score_ids,
            other => panic!("handler saw span_name {other:?}"),
        };
        assert!(ids.contains(&reply.span_id), "{reply:?}");
    }

    assert_attributed(
        &all_samples(&dir),
        &[
            Expect {
                function: "burn_resize_rpc",
                span_name: "media.Worker/Resize",
                span_ids: &resize_ids,
            },
            Expect {
                function: "burn_score_rpc",
                span_name: "media.Worker/Score",
                span_ids: &score_ids,
            },
        ],
        50,
    );
}

#[test]
fn a_client_traceparent_becomes_the_remote_parent_and_errors_set_the_grpc_status() {
    let exporter = install_global(SERVICE);
    // Not during the profiled test: its requests are not that test's.
    let _lock = profiler_lock();
    let rt = runtime(2);
    let addr = serve(&rt);
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let parent_id = "b7ad6b7169203331";
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    let (reply, unimplemented) = rt.block_on(async {
        let channel = connect(addr).await;
        let reply = call(
            channel.clone(),
            "/media.Worker/Score",
            1,
            Some(&traceparent),
        )
        .await
        .unwrap();
        let err = call(channel, "/media.Worker/Nope", 2, None)
            .await
            .unwrap_err();
        (reply, err)
    });
    assert_eq!(unimplemented.code(), tonic::Code::Unimplemented);

    let spans: Vec<_> = spans_named(&exporter, "media.Worker/Score")
        .into_iter()
        .filter(|s| s.span_context.trace_id().to_string() == trace_id)
        .collect();
    assert_eq!(spans.len(), 1, "one server span in the client's trace");
    let span = &spans[0];
    assert_eq!(span.parent_span_id.to_string(), parent_id);
    assert!(span.parent_span_is_remote);
    let own_id = span.span_context.span_id().to_string();
    assert_eq!(attr(span, PROFILE_ID_ATTRIBUTE), Some(own_id.clone()));
    assert_eq!(attr(span, "rpc.method").as_deref(), Some("Score"));
    assert_eq!(
        reply.span_id, own_id,
        "the handler ran under the server span's labels"
    );

    let nope = spans_named(&exporter, "media.Worker/Nope");
    assert_eq!(nope.len(), 1);
    assert_eq!(
        attr(&nope[0], "rpc.grpc.status_code").as_deref(),
        Some("12")
    );
    assert!(matches!(
        nope[0].status,
        opentelemetry::trace::Status::Error { .. }
    ));
}
