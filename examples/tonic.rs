//! A tonic gRPC server whose calls get span profiles through one layer: `ProfileLayer`.
//!
//! Shows: `Server::builder().layer(ProfileLayer::new())`, server spans named by the gRPC
//! method (`shop.Catalog/Price`), and the handler's CPU labelled with its call's span. No
//! `protoc` is needed: the messages are hand-written prost structs, and the service and
//! client use tonic's `server::Grpc` / `client::Grpc` with `tonic_prost::ProstCodec`
//! directly, exactly as `tonic-build` generated code would. The example serves on
//! 127.0.0.1, calls it with a real tonic client, stops the profiler and prints the CPU
//! time per `span_name` from the pprof files in `./profiles`.
//!
//! Run: `cargo run --release --example tonic --features tower`

#[path = "support/summary.rs"]
mod summary;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use span_profiler::{ProfileLayer, Profiler, ProfilingTracerProvider};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::{Channel, Server};
use tonic_prost::ProstCodec;

const APP: &str = "tonic-example";

/// `message ItemRequest { uint64 sku = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemRequest {
    #[prost(uint64, tag = "1")]
    pub sku: u64,
}

/// `message ItemReply { uint64 value = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
pub struct ItemReply {
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

#[inline(never)]
fn compute_price(sku: u64) -> u64 {
    let end = Instant::now() + Duration::from_micros(700);
    let mut x = sku;
    while Instant::now() < end {
        x = std::hint::black_box(x.rotate_left(9) ^ x.wrapping_mul(0x2545_f491));
    }
    x % 10_000
}

#[inline(never)]
fn count_stock(sku: u64) -> u64 {
    let mut v: Vec<u64> = (0..15_000u64).map(|i| (i * sku) % 7_919).collect();
    v.sort_unstable();
    std::hint::black_box(v[v.len() / 2])
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One unary method of `shop.Catalog`.
struct Method(fn(u64) -> u64);

impl UnaryService<ItemRequest> for Method {
    type Response = ItemReply;
    type Future = BoxFuture<Result<tonic::Response<ItemReply>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<ItemRequest>) -> Self::Future {
        let work = self.0;
        let sku = request.into_inner().sku;
        Box::pin(async move {
            let mut value = 0;
            for _ in 0..4 {
                value ^= work(sku);
                tokio::task::yield_now().await;
            }
            Ok(tonic::Response::new(ItemReply { value }))
        })
    }
}

/// The server of `service shop.Catalog { rpc Price; rpc Stock; }`, as generated code
/// would route it.
#[derive(Clone)]
struct Catalog;

impl NamedService for Catalog {
    const NAME: &'static str = "shop.Catalog";
}

impl tower::Service<http::Request<tonic::body::Body>> for Catalog {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let method = match req.uri().path() {
                "/shop.Catalog/Price" => Method(compute_price),
                "/shop.Catalog/Stock" => Method(count_stock),
                _ => return Ok(tonic::Status::unimplemented("no such method").into_http()),
            };
            let mut grpc = tonic::server::Grpc::new(ProstCodec::<ItemReply, ItemRequest>::new());
            Ok(grpc.unary(method, req).await)
        })
    }
}

async fn call(channel: Channel, path: &'static str, sku: u64) -> Result<u64, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let reply: tonic::Response<ItemReply> = grpc
        .unary(
            tonic::Request::new(ItemRequest { sku }),
            PathAndQuery::from_static(path),
            ProstCodec::<ItemRequest, ItemReply>::new(),
        )
        .await?;
    Ok(reply.into_inner().value)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from("./profiles");
    let profiler = Profiler::builder()
        .application_name(APP)
        .upload_interval(Duration::from_secs(2))
        .output_dir(&out)
        .start()?;
    let exporter = InMemorySpanExporter::default();
    let sdk = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(
        ProfilingTracerProvider::new(sdk).with_service_name(APP),
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let calls = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let router = Server::builder()
            .layer(ProfileLayer::new())
            .add_service(Catalog);
        tokio::spawn(router.serve_with_incoming(incoming));
        println!("serving shop.Catalog on {addr}; calling it for 3 s ...");

        let channel = Channel::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut callers = Vec::new();
        for c in 0..8u64 {
            let channel = channel.clone();
            callers.push(tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let path = if (c + n) % 2 == 0 {
                        "/shop.Catalog/Price"
                    } else {
                        "/shop.Catalog/Stock"
                    };
                    call(channel.clone(), path, c * 1000 + n + 1).await?;
                    n += 1;
                }
                Ok::<_, tonic::Status>(n)
            }));
        }
        let mut total = 0;
        for c in callers {
            total += c.await??;
        }
        Ok::<_, Box<dyn std::error::Error>>(total)
    })?;
    let report = profiler.stop()?;
    println!("{calls} calls; {} files written", report.files_written);
    summary::print_cpu_by_span_name(&out, APP)?;
    println!(
        "{} server spans exported, e.g. {:?}",
        exporter.get_finished_spans()?.len(),
        exporter
            .get_finished_spans()?
            .first()
            .map(|s| s.name.to_string())
    );
    Ok(())
}
