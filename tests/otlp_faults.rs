//! The upload fault matrix for `Protocol::Otlp`: the same uploader (queue, retries,
//! backoff, timeouts, stop deadline) carrying OTLP requests from the real encoder to the
//! loopback receiver, which decodes them with opentelemetry-proto's types and applies
//! Pyroscope's OTLP rules.
#![cfg(feature = "upload")]

#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/upload_util.rs"]
mod upload_util;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use receiver::{unused_addr, Fault, Receiver};
use span_profiler::__private::label_id_of;
use span_profiler::__private::pprof::{EncodeWindowOptions, PreparedWindow};
use span_profiler::__private::upload::{UploadWindow, Uploader};
use span_profiler::{Labels, Profiled, ProfiledExt, ProfilerBuilder, Protocol};
use upload_util::{start, upload_leaf_work, wait_until};

/// Label ids of `n` spans with trace ids, registered while the holders live.
struct Spans {
    _holders: Vec<Profiled<std::future::Ready<()>>>,
    ids: Vec<u64>,
}

fn spans(n: u64) -> Spans {
    let holders: Vec<_> = (0..n)
        .map(|i| {
            std::future::ready(()).with_labels(
                Labels::span(0x00f1_0000_0000_0000 + i, format!("route{}", i % 7))
                    .with_trace_id(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_0000 + u128::from(i)),
            )
        })
        .collect();
    let ids = holders.iter().map(label_id_of).collect();
    Spans {
        _holders: holders,
        ids,
    }
}

/// A window of `stacks` stacks times `labels`, as OTLP requests cut at 1 MiB / 16,000
/// samples.
fn otlp_window(stacks: usize, labels: &[u64]) -> (UploadWindow, usize) {
    let base = upload_leaf_work as *const () as usize;
    let mut raw = Vec::new();
    for i in 0..stacks {
        let frames = vec![base + i % 211, base + 300 + i / 211, base + 900];
        for &id in labels {
            raw.push((frames.clone(), id, 1 + (i % 3) as u64));
        }
    }
    let start = SystemTime::now() - Duration::from_secs(10);
    let end = start + Duration::from_secs(10);
    let opts = EncodeWindowOptions {
        sample_rate_hz: 100,
        max_piece_bytes: Some(1024 * 1024),
        max_piece_samples: Some(16_000),
    };
    let bodies = PreparedWindow::new(&raw, start, end, opts).encode_otlp("otlp-faults", &[]);
    let n = bodies.len();
    (UploadWindow::from_gzipped(bodies, start, end), n)
}

fn small_window() -> UploadWindow {
    let spans = spans(2);
    let (w, n) = otlp_window(5, &spans.ids);
    assert_eq!(n, 1);
    w
}

fn builder(url: &str) -> ProfilerBuilder {
    upload_util::builder(url).protocol(Protocol::Otlp)
}

fn accepted(receiver: &Receiver) -> usize {
    receiver
        .received()
        .iter()
        .filter(|r| r.answered == 200)
        .count()
}

fn started(b: ProfilerBuilder) -> Uploader {
    start(b)
}

#[test]
fn otlp_a_500_twice_then_200_is_delivered_exactly_once() {
    let receiver = Receiver::start();
    receiver.script([Fault::Status(500), Fault::Status(500)]);
    let uploader = started(builder(&receiver.url()));
    uploader.enqueue(small_window());
    receiver.wait_for(3, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(600));
    let report = uploader.stop(Duration::from_secs(2));
    let received = receiver.assert_all_valid();
    assert_eq!(received.len(), 3, "{received:#?}");
    assert!(received
        .iter()
        .all(|r| r.path == "/v1development/profiles" && r.otlp.is_some()));
    assert_eq!(accepted(&receiver), 1);
    assert_eq!((report.delivered, report.counts.retries), (1, 2));
    assert_eq!(report.lost, 0);
}

#[test]
fn otlp_a_429_is_retried_no_sooner_than_the_minimum_backoff() {
    let receiver = Receiver::start();
    receiver.script([Fault::Status(429)]);
    let min = Duration::from_millis(300);
    let uploader = started(builder(&receiver.url()).retry_backoff(min, Duration::from_secs(1)));
    uploader.enqueue(small_window());
    let received = receiver.wait_for(2, Duration::from_secs(10));
    assert!(received[1].at - received[0].at >= min);
    assert_eq!(received[1].answered, 200);
    let report = uploader.stop(Duration::from_secs(2));
    assert_eq!((report.delivered, report.counts.retries), (1, 1));
}

#[test]
fn otlp_a_400_is_not_retried() {
    let receiver = Receiver::start();
    receiver.script([Fault::Status(400)]);
    let uploader = started(builder(&receiver.url()));
    uploader.enqueue(small_window());
    receiver.wait_for(1, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(600));
    let report = uploader.stop(Duration::from_secs(2));
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(report.counts.dropped.rejected, 1);
    assert_eq!(report.counts.retries, 0);
}

#[test]
fn otlp_a_server_that_never_answers_times_out_and_the_upload_is_retried() {
    let receiver = Receiver::start();
    receiver.script([Fault::NeverAnswer]);
    let timeout = Duration::from_millis(400);
    let uploader = started(builder(&receiver.url()).request_timeout(timeout));
    uploader.enqueue(small_window());
    let received = receiver.wait_for(2, Duration::from_secs(10));
    assert!(received[1].at - received[0].at >= timeout);
    assert!(wait_until(Duration::from_secs(5), || uploader
        .counts()
        .uploads_ok
        == 1));
    let report = uploader.stop(Duration::from_secs(2));
    assert_eq!(
        (
            report.counts.uploads_failed,
            report.counts.retries,
            report.delivered
        ),
        (1, 1, 1)
    );
}

#[test]
fn otlp_refused_connections_are_retried_until_the_server_appears() {
    let addr = unused_addr();
    let uploader = started(builder(&format!("http://{addr}")));
    uploader.enqueue(small_window());
    assert!(wait_until(Duration::from_secs(5), || uploader
        .counts()
        .uploads_failed
        >= 2));
    assert_eq!(uploader.counts().uploads_ok, 0);
    let receiver = Receiver::start_on(addr, None);
    receiver.wait_for(1, Duration::from_secs(10));
    assert!(wait_until(Duration::from_secs(5), || uploader
        .counts()
        .uploads_ok
        == 1));
    let report = uploader.stop(Duration::from_secs(2));
    receiver.assert_all_valid();
    assert_eq!(accepted(&receiver), 1);
    assert_eq!(report.delivered, 1);
}

#[test]
fn otlp_stop_while_the_server_is_down_returns_within_its_deadline_and_reports_the_loss() {
    let addr = unused_addr();
    let uploader = started(builder(&format!("http://{addr}")));
    uploader.enqueue(small_window());
    uploader.enqueue(small_window());
    std::thread::sleep(Duration::from_millis(100));
    let deadline = Duration::from_secs(1);
    let began = Instant::now();
    let report = uploader.stop(deadline);
    let took = began.elapsed();
    assert!(
        took <= deadline + Duration::from_secs(1),
        "stop took {took:?}"
    );
    assert!(
        took >= deadline - Duration::from_millis(50),
        "gave up early: {took:?}"
    );
    assert!(!report.flushed);
    assert_eq!(report.delivered, 0);
    assert_eq!(report.lost_at_stop, 2);
}

#[test]
fn otlp_gzip_bodies_are_compressed_once_and_decode() {
    let receiver = Receiver::start();
    let uploader = started(builder(&receiver.url()).otlp_gzip(true));
    uploader.enqueue(small_window());
    let report = uploader.stop(Duration::from_secs(2));
    assert_eq!(report.delivered, 1);
    let received = receiver.assert_all_valid();
    assert_eq!(received[0].header("content-encoding"), Some("gzip"));
    assert_eq!(
        received[0].header("content-type"),
        Some("application/x-protobuf")
    );
    assert!(received[0].otlp.is_some());
}

#[test]
fn otlp_a_window_of_50000_distinct_stack_label_pairs_is_split_and_every_request_is_valid() {
    let spans = spans(10);
    let (w, requests) = otlp_window(5_000, &spans.ids);
    let expected_weight: i64 = (0..5_000i64).map(|i| 1 + i % 3).sum::<i64>() * 10;
    assert!(
        requests >= 4,
        "50,000 samples need 4 requests of 16,000: {requests}"
    );
    let receiver = Receiver::start();
    let uploader = started(builder(&receiver.url()));
    uploader.enqueue(w);
    receiver.wait_for(requests, Duration::from_secs(30));
    let report = uploader.stop(Duration::from_secs(5));
    assert_eq!(report.delivered, requests as u64);
    let received = receiver.assert_all_valid();
    assert_eq!(received.len(), requests);
    let (mut samples, mut weight) = (0usize, 0i64);
    let mut linked = BTreeSet::new();
    for r in &received {
        assert!(r.body_len <= 1024 * 1024, "{} bytes", r.body_len);
        let otlp = r.otlp.as_ref().unwrap();
        for s in otlp.samples() {
            samples += 1;
            weight += s.cpu_ns / 10_000_000;
            linked.insert((
                s.label("span_id").expect("linked").to_owned(),
                s.label("trace_id").expect("with its trace").to_owned(),
            ));
        }
        // One link per distinct local root span, shared by its samples.
        assert!(otlp.links.len() <= 10);
    }
    assert_eq!(samples, 50_000);
    assert_eq!(weight, expected_weight);
    assert_eq!(linked.len(), 10);
}

/// The receiver's rules can fail: mutations of a valid request, each breaking one rule of
/// Pyroscope's OTLP conversion, are refused.
#[test]
fn the_otlp_receiver_refuses_what_pyroscope_cannot_convert() {
    use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
    use prost::Message;
    use receiver::otlp_check::check;

    let spans = spans(2);
    let base = upload_leaf_work as *const () as usize;
    let raw: Vec<_> = spans
        .ids
        .iter()
        .map(|&id| (vec![base, base + 64], id, 2))
        .collect();
    let start = SystemTime::now() - Duration::from_secs(5);
    let opts = EncodeWindowOptions {
        sample_rate_hz: 100,
        max_piece_bytes: None,
        max_piece_samples: None,
    };
    let body = PreparedWindow::new(&raw, start, start + Duration::from_secs(5), opts)
        .encode_otlp("rules", &[])
        .remove(0);
    let ok = check(Some("application/x-protobuf"), false, &body).expect("valid");
    assert_eq!(ok.links.len(), 2);
    assert_eq!(ok.samples().count(), 2);
    assert_eq!(
        check(Some("application/json"), false, &body).unwrap_err().0,
        415
    );
    let valid = ExportProfilesServiceRequest::decode(body.as_slice()).unwrap();
    type Mutation = fn(&mut ExportProfilesServiceRequest);
    let mutations: [(&str, Mutation); 6] = [
        ("string_table[0]", |r| {
            r.dictionary.as_mut().unwrap().string_table[0] = "x".into()
        }),
        ("mapping_table[0]", |r| {
            r.dictionary.as_mut().unwrap().mapping_table.remove(0);
        }),
        ("process_cpu", |r| {
            let p = &mut r.resource_profiles[0].scope_profiles[0].profiles[0];
            p.period = 0;
        }),
        ("trace id", |r| {
            r.dictionary.as_mut().unwrap().link_table[1]
                .trace_id
                .truncate(8)
        }),
        ("stack", |r| {
            r.resource_profiles[0].scope_profiles[0].profiles[0].samples[0].stack_index = 999
        }),
        ("service.name", |r| {
            r.resource_profiles[0]
                .resource
                .as_mut()
                .unwrap()
                .attributes
                .retain(|kv| kv.key != "service.name")
        }),
    ];
    for (what, mutate) in mutations {
        let mut request = valid.clone();
        mutate(&mut request);
        let err = check(
            Some("application/x-protobuf"),
            false,
            &request.encode_to_vec(),
        )
        .expect_err(what);
        assert_eq!(err.0, 400, "{what}: {err:?}");
    }
}

/// Requests over `max_request_bytes` are halved until they fit; nothing is lost and every
/// request is complete on its own (its own dictionary).
#[test]
fn otlp_requests_over_the_byte_limit_are_halved_until_they_fit() {
    use receiver::otlp_check::check;

    let spans = spans(4);
    let base = upload_leaf_work as *const () as usize;
    let raw: Vec<_> = (0..300usize)
        .flat_map(|i| {
            let frames = vec![base + i, base + 1000 + i, base + 2000];
            spans.ids.iter().map(move |&id| (frames.clone(), id, 1))
        })
        .collect();
    let start = SystemTime::now() - Duration::from_secs(5);
    let limit = 8 * 1024;
    let opts = EncodeWindowOptions {
        sample_rate_hz: 100,
        max_piece_bytes: Some(limit),
        max_piece_samples: None,
    };
    let bodies = PreparedWindow::new(&raw, start, start + Duration::from_secs(5), opts)
        .encode_otlp("halves", &[]);
    assert!(bodies.len() >= 4, "{} requests", bodies.len());
    let mut samples = 0;
    for body in &bodies {
        assert!(body.len() <= limit, "{} bytes over {limit}", body.len());
        let request = check(Some("application/x-protobuf"), false, body).expect("valid");
        samples += request.samples().count();
    }
    assert_eq!(samples, 1200);
}
