//! Uploads as the server sees them: both protocols byte for byte, auth headers, https with
//! a private CA, and a graph with both rustls crypto providers. Over 127.0.0.1, against
//! the strict receiver.
#![cfg(feature = "upload")]

#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/upload_util.rs"]
mod upload_util;

use std::time::Duration;

use receiver::{Endpoint, Receiver, ServerVersion, TlsMaterial};
use span_profiler::Protocol;
use upload_util::{builder, label_ids, small_window, start, wait_until, window};

#[test]
fn push_requests_carry_the_series_labels_and_valid_labelled_profiles() {
    for version in [ServerVersion::V1, ServerVersion::V2_1] {
        push_requests_carry_the_series_labels_on(version);
    }
}

fn push_requests_carry_the_series_labels_on(version: ServerVersion) {
    let receiver = Receiver::start();
    receiver.set_version(version);
    let labels = label_ids(3);
    let (w, _) = window(20, &labels.ids, Duration::from_secs(10));
    let uploader = start(
        builder(&receiver.url())
            .tag("region", "eu-west-1")
            .tag("pod", "p,1}"),
    );
    uploader.enqueue(w);
    let report = uploader.stop(Duration::from_secs(5));
    assert_eq!(report.delivered, 1);
    let received = receiver.assert_all_valid();
    let r = &received[0];
    assert_eq!(r.endpoint, Endpoint::Push);
    assert_eq!(r.path, "/push.v1.PusherService/Push");
    assert_eq!(r.header("content-type"), Some("application/proto"));
    assert_eq!(
        r.header("content-encoding"),
        None,
        "the raw profile is gzipped; the body is not"
    );
    assert_eq!(r.header("connect-protocol-version"), Some("1"));
    assert_eq!(r.label("__name__"), Some("process_cpu"));
    assert_eq!(r.label("service_name"), Some("upload-test"));
    assert_eq!(r.label("region"), Some("eu-west-1"));
    assert_eq!(r.label("pod"), Some("p,1}"), "push values need no escaping");
    assert_eq!(r.label("otel.scope.name"), Some("span-profiler"));
    assert_eq!(
        r.label("otel.scope.version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.label("process.runtime.name"), Some("rust"));
    assert!(r
        .label("process.runtime.version")
        .is_some_and(|v| v.starts_with("1.")));
    assert_eq!(r.label("__delta__"), Some("false"));
    assert_eq!(r.series_labels.len(), 9);
    let p = &r.profiles[0];
    assert_eq!(p.sample.len(), 60);
    let keys: std::collections::BTreeSet<&str> = p
        .sample
        .iter()
        .flat_map(|s| {
            s.label
                .iter()
                .map(|l| p.string_table[l.key as usize].as_str())
        })
        .collect();
    assert!(
        keys.contains("span_id") && keys.contains("span_name"),
        "{keys:?}"
    );
}

#[test]
fn ingest_requests_follow_the_name_grammar_and_the_query_fields() {
    for version in [ServerVersion::V1, ServerVersion::V2_1] {
        ingest_requests_follow_the_name_grammar_on(version);
    }
}

fn ingest_requests_follow_the_name_grammar_on(version: ServerVersion) {
    let receiver = Receiver::start();
    receiver.set_version(version);
    let uploader = start(
        builder(&receiver.url())
            .protocol(Protocol::Ingest)
            .sample_rate(250)
            .tag("env", "a+b c=d")
            .tag("zone", "z1"),
    );
    uploader.enqueue(small_window());
    assert_eq!(uploader.stop(Duration::from_secs(5)).delivered, 1);
    let received = receiver.assert_all_valid();
    let r = &received[0];
    assert_eq!(r.path, "/ingest");
    let query = r.query.as_deref().unwrap();
    assert!(
        query.contains("%2B") && !query.contains('+'),
        "`+` must be sent as %2B: {query}"
    );
    match &r.endpoint {
        Endpoint::Ingest {
            name,
            from,
            until,
            spy_name,
            sample_rate,
        } => {
            assert_eq!(name, "upload-test{env=a+b c=d,zone=z1}");
            assert!(until > from, "{from}..{until}");
            assert_eq!(until - from, 10);
            assert_eq!(spy_name, "span-profiler");
            assert_eq!(*sample_rate, 250);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.label("env"), Some("a+b c=d"));
    assert_eq!(r.label("zone"), Some("z1"));
    // The server's own names count towards the 30.
    assert_eq!(r.label("__delta__"), Some("false"));
    assert_eq!(r.label("pyroscope_spy"), Some("span-profiler"));
    assert_eq!(r.series_labels.len(), 6);
    assert_eq!(r.profiles.len(), 1);
    assert!(!r
        .header("content-type")
        .unwrap_or("")
        .starts_with("multipart/"));
}

#[test]
fn opentelemetrys_default_service_name_uploads_by_push_and_is_refused_for_ingest_with_the_fix() {
    let receiver = Receiver::start();
    let uploader = start(builder(&receiver.url()).application_name("unknown_service:demo"));
    uploader.enqueue(small_window());
    assert_eq!(uploader.stop(Duration::from_secs(5)).delivered, 1);
    let received = receiver.assert_all_valid();
    assert_eq!(
        received[0].label("service_name"),
        Some("unknown_service:demo")
    );

    let err = builder(&receiver.url())
        .application_name("unknown_service:demo")
        .protocol(Protocol::Ingest)
        .start()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`application_name`")
            && err.contains("contains `:`")
            && err.contains("/ingest")
            && err.contains("Protocol::Push"),
        "{err}"
    );
}

#[test]
fn the_service_namespace_is_a_series_label_of_both_protocols() {
    for protocol in [Protocol::Push, Protocol::Ingest] {
        let receiver = Receiver::start();
        let uploader = start(
            builder(&receiver.url())
                .protocol(protocol)
                .service_namespace("shop"),
        );
        uploader.enqueue(small_window());
        assert_eq!(uploader.stop(Duration::from_secs(5)).delivered, 1);
        let received = receiver.assert_all_valid();
        assert_eq!(
            received[0].label("service_name"),
            Some("upload-test"),
            "{protocol:?}"
        );
        assert_eq!(
            received[0].label("service_namespace"),
            Some("shop"),
            "{protocol:?}"
        );
    }
}

#[test]
fn tags_that_collide_on_pyroscope_v1_are_warned_about_once_and_refused_only_by_v1() {
    let logs = upload_util::captured_logs();
    let tagged = |url: &str| {
        builder(url)
            .tag("deploy.env", "prod")
            .tag("deploy_env", "blue")
    };
    let receiver = Receiver::start();
    let uploader = start(tagged(&receiver.url()));
    let warnings: Vec<String> = logs
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("`deploy.env`") && l.contains("`deploy_env`"))
        .cloned()
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("v1.x"), "{}", warnings[0]);
    // A v2.1 server takes both names.
    uploader.enqueue(small_window());
    assert_eq!(uploader.stop(Duration::from_secs(5)).delivered, 1);
    receiver.assert_all_valid();
    // A v1.x server rewrites `.` to `_`; the two values differ, so it refuses the profile.
    let v1 = Receiver::start();
    v1.set_version(ServerVersion::V1);
    let uploader = start(tagged(&v1.url()));
    uploader.enqueue(small_window());
    let report = uploader.stop(Duration::from_secs(5));
    assert_eq!((report.delivered, report.counts.dropped.rejected), (0, 1));
    let verdict = v1.received()[0].verdict.clone().unwrap_err();
    assert!(
        verdict.contains("duplicate series label name deploy_env"),
        "{verdict}"
    );
}

#[test]
fn ingest_refuses_tag_values_with_a_comma_or_brace_at_start() {
    let err = builder("http://127.0.0.1:1")
        .protocol(Protocol::Ingest)
        .tag("k", "a}b")
        .start()
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`tag`") && text.contains("contains `}`"),
        "{text}"
    );
}

#[test]
fn auth_headers_arrive_as_configured() {
    let receiver = Receiver::start();
    let uploader = start(
        builder(&receiver.url())
            .basic_auth("123456", "glc_s3cr3t")
            .tenant_id("team-a")
            .http_header("X-Gateway-Key", "k3y"),
    );
    uploader.enqueue(small_window());
    assert_eq!(uploader.stop(Duration::from_secs(5)).delivered, 1);
    let r = &receiver.assert_all_valid()[0];
    // base64("123456:glc_s3cr3t")
    assert_eq!(
        r.header("authorization"),
        Some("Basic MTIzNDU2OmdsY19zM2NyM3Q=")
    );
    assert_eq!(r.header("x-scope-orgid"), Some("team-a"));
    assert_eq!(r.header("x-gateway-key"), Some("k3y"));
    assert!(r
        .header("user-agent")
        .is_some_and(|ua| ua.starts_with("span-profiler/")));

    let receiver = Receiver::start();
    let uploader = start(builder(&receiver.url()).bearer_token("t0k3n"));
    uploader.enqueue(small_window());
    assert_eq!(uploader.stop(Duration::from_secs(5)).delivered, 1);
    assert_eq!(
        receiver.assert_all_valid()[0].header("authorization"),
        Some("Bearer t0k3n")
    );
}

#[test]
fn secrets_stay_out_of_debug_output_and_errors() {
    let b = builder("http://127.0.0.1:1")
        .basic_auth("user", "hunter2")
        .bearer_token("t0k3n")
        .http_header("X-Key", "k3y-value");
    let shown = format!("{b:?}");
    for secret in ["hunter2", "t0k3n", "k3y-value"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    let config = span_profiler::__private::upload::config(b.basic_auth("user", "hunter2")).unwrap();
    assert!(!format!("{config:?}").contains("hunter2"));
    let err = builder("http://user:hunter2@127.0.0.1:1")
        .start()
        .unwrap_err()
        .to_string();
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn a_redirect_is_not_followed_and_counts_as_refused() {
    let receiver = Receiver::start();
    receiver.script([receiver::Fault::Status(307)]);
    let uploader = start(builder(&receiver.url()).basic_auth("u", "p"));
    uploader.enqueue(small_window());
    receiver.wait_for(1, Duration::from_secs(5));
    assert!(wait_until(Duration::from_secs(5), || uploader
        .counts()
        .dropped
        .rejected
        == 1));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.received().len(), 1);
    uploader.stop(Duration::from_secs(1));
}

#[test]
fn https_to_a_server_with_a_private_ca_works_through_the_custom_root_option() {
    let tls = TlsMaterial::generate();
    let receiver = Receiver::start_tls(&tls);
    let uploader = start(builder(&receiver.https_url()).tls_root_certificate_pem(&tls.ca_pem));
    uploader.enqueue(small_window());
    let report = uploader.stop(Duration::from_secs(5));
    assert_eq!(report.delivered, 1, "{report:?}");
    let r = &receiver.assert_all_valid()[0];
    assert_eq!(r.label("__name__"), Some("process_cpu"));
}

#[test]
fn https_to_an_untrusted_certificate_is_never_delivered() {
    let tls = TlsMaterial::generate();
    let receiver = Receiver::start_tls(&tls);
    let uploader = start(builder(&receiver.https_url()));
    uploader.enqueue(small_window());
    assert!(wait_until(Duration::from_secs(5), || uploader
        .counts()
        .uploads_failed
        >= 1));
    let report = uploader.stop(Duration::from_millis(200));
    assert_eq!(report.delivered, 0);
    assert!(
        receiver.received().is_empty(),
        "no request may pass an untrusted handshake"
    );
}

#[test]
fn a_graph_with_both_rustls_providers_still_uploads_over_https() {
    // The dev-dependencies enable rustls' `aws-lc-rs` next to `ring`: with both compiled in
    // and no process default, rustls cannot choose, and `ClientConfig::builder()` panics.
    assert!(rustls::crypto::CryptoProvider::get_default().is_none());
    let _both = (
        rustls::crypto::aws_lc_rs::default_provider(),
        rustls::crypto::ring::default_provider(),
    );
    let ambiguous = std::panic::catch_unwind(|| {
        let _ = rustls::ClientConfig::builder();
    });
    assert!(
        ambiguous.is_err(),
        "both providers must be compiled in for this test to mean anything"
    );
    // The uploader passes `ring` explicitly, so it is unaffected.
    let tls = TlsMaterial::generate();
    let receiver = Receiver::start_tls(&tls);
    let uploader = start(builder(&receiver.https_url()).tls_root_certificate_pem(&tls.ca_pem));
    uploader.enqueue(small_window());
    assert_eq!(uploader.stop(Duration::from_secs(5)).delivered, 1);
    receiver.assert_all_valid();
}

#[test]
fn bad_upload_options_are_reported_by_start_with_the_rule() {
    let cases: Vec<(span_profiler::ProfilerBuilder, &str)> = vec![
        (builder("localhost:4040"), "no scheme"),
        (builder("ftp://h"), "scheme `ftp`"),
        (builder("http://h").tag("__x", "v"), "reserves"),
        (builder("http://h").tag("service_name", "v"), "sets itself"),
        (
            builder("http://h").retry_backoff(Duration::from_secs(2), Duration::from_secs(1)),
            "retry_backoff",
        ),
        (
            builder("http://h").max_profile_age(Duration::from_secs(7200)),
            "max_profile_age",
        ),
        (
            builder("http://h").max_request_bytes(8 << 20),
            "max_request_bytes",
        ),
        (builder("http://h").queue_capacity(0), "queue_capacity"),
        (
            builder("http://h").http_header("Host", "x"),
            "set by the uploader",
        ),
        (
            builder("http://h").tls_root_certificate_pem("not pem"),
            "CERTIFICATE",
        ),
    ];
    for (b, rule) in cases {
        let err = span_profiler::__private::upload::config(b)
            .unwrap_err()
            .to_string();
        assert!(err.contains(rule), "expected `{rule}` in: {err}");
    }
}
