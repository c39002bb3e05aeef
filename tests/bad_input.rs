//! Bad input everywhere, as property tests with a seeded generator: arbitrary UTF-8 (empty,
//! huge, with `,` `}` `=` `"` newlines and NUL) through labels, tags and environment
//! variables. Each input is either accepted and encoded exactly (checked in the written
//! files and in requests the strict receiver accepts) or refused with an error that says
//! what to fix; never a panic, never an invalid profile.
#![cfg(feature = "upload")]

mod common;
#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/upload_util.rs"]
mod upload_util;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use common::*;
use receiver::Receiver;
use span_profiler::__private::upload::config;
use span_profiler::{Labels, ProfiledExt, Profiler, ProfilerBuilder, Protocol};

/// Tests here set process-wide environment variables, which `validate()` also reads:
/// they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Characters that break naive encoders, beside plain ones.
const NASTY: &[char] = &[
    ',', '}', '{', '=', '"', '\\', ' ', '\n', '\t', '\0', '/', ':', '.', '_', '-', 'é', '日', '🦀',
    '\u{FFFD}', '\u{200B}', '\u{7F}',
];

/// An arbitrary string: empty, short, around the 2048-byte value cap, or huge; mixing
/// plain ASCII, the nasty characters and random code points.
fn arbitrary(rng: &mut Rng, allow_nul: bool) -> String {
    let len = match rng.range(0, 10) {
        0 => 0,
        1..=5 => rng.range(1, 12),
        6 | 7 => rng.range(12, 80),
        8 => rng.range(1000, 3000),
        _ => rng.range(5000, 70_000),
    } as usize;
    let mut s = String::new();
    while s.chars().count() < len {
        let c = match rng.range(0, 4) {
            0 => NASTY[rng.range(0, NASTY.len() as u64) as usize],
            1 => char::from_u32(rng.range(0x80, 0x11_0000) as u32).unwrap_or('x'),
            _ => (b'a' + rng.range(0, 26) as u8) as char,
        };
        if c == '\0' && !allow_nul {
            continue;
        }
        s.push(c);
    }
    s
}

/// A label key: usually valid-looking, sometimes arbitrary.
fn key(rng: &mut Rng) -> String {
    if rng.range(0, 3) == 0 {
        return arbitrary(rng, true);
    }
    let len = rng.range(1, 20) as usize;
    (0..len)
        .map(|_| {
            let alphabet = b"abcxyzABC_.0123456789";
            alphabet[rng.range(0, alphabet.len() as u64) as usize] as char
        })
        .collect()
}

#[inline(never)]
fn bad_input_burn(cpu: Duration) {
    spin_cpu(cpu);
}

#[test]
fn arbitrary_labels_are_refused_clearly_or_reach_files_and_server_exactly() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let _lock = profiler_lock();
    let mut rng = Rng::new(0xbad1);
    // span id -> the labels as the profiler keeps them (after cuts), for the check below.
    let mut expected: HashMap<String, Labels> = HashMap::new();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..300u64 {
        let span_id = 0x7000 + i;
        let name = arbitrary(&mut rng, true);
        let mut labels = Labels::span(span_id, name.clone());
        for _ in 0..rng.range(0, 3) {
            let (k, v) = (key(&mut rng), arbitrary(&mut rng, true));
            match labels.clone().try_with(k.clone(), v.clone()) {
                Ok(with) => labels = with,
                Err(err) => {
                    refused += 1;
                    let message = err.to_string();
                    assert!(message.len() > 10, "unclear error for {k:?}: {message:?}");
                    // The lenient form drops the pair instead, never panics.
                    let lenient = labels.clone().with(k.clone(), v);
                    assert_eq!(lenient.get(&k), None);
                }
            }
        }
        if let Some(hex) = labels.span_id_hex() {
            expected.insert(hex, labels.clone());
        }
        accepted.push(labels);
    }
    assert!(
        refused > 20,
        "the generator should produce bad keys ({refused})"
    );

    let receiver = Receiver::start();
    let dir = temp_dir("bad-input-labels");
    let profiler = Profiler::builder()
        .application_name("bad-input")
        .sample_rate(1000)
        .upload_interval(Duration::from_secs(1))
        .server_address(receiver.url())
        .output_dir(&dir)
        .max_request_bytes(64 * 1024)
        .start()
        .expect("profiler starts");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    rt.block_on(async {
        let tasks: Vec<_> = accepted
            .into_iter()
            .map(|labels| {
                tokio::spawn(
                    async {
                        for _ in 0..4 {
                            bad_input_burn(Duration::from_millis(2));
                            tokio::task::yield_now().await;
                        }
                    }
                    .with_labels(labels),
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let report = profiler.stop().expect("stops");
    let upload = report.upload.expect("upload report");
    let rules: Vec<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.verdict.clone().err())
        .map(|rule| rule.chars().take(300).collect())
        .collect();
    assert!(rules.is_empty(), "the server would refuse: {rules:#?}");
    assert_eq!(upload.lost, 0, "{upload:?}");

    // Every request met every server rule; every file decodes and validates.
    let received = receiver.assert_all_valid();
    let from_server: Vec<_> = received.iter().flat_map(|r| r.samples()).collect();
    let from_files = all_samples(&dir);
    let mut checked = 0;
    for s in from_files.iter().chain(&from_server) {
        let Some(hex) = s.labels.get("span_id") else {
            continue;
        };
        let labels = expected
            .get(hex)
            .unwrap_or_else(|| panic!("unknown span_id {hex}"));
        let name = s.labels.get("span_name").map(String::as_str);
        if name == Some("other") && labels.span_name() != Some("other") {
            // Beyond the per-window cap of distinct span names (counted).
            assert!(report.stats.span_names_overflowed > 0, "{:?}", report.stats);
        } else {
            assert_eq!(name, labels.span_name(), "span_name of {hex}");
        }
        // Extra pairs arrive exactly, unless the per-window key cap removed the key
        // (counted in label_keys_removed).
        let sent: BTreeMap<&str, &str> = labels
            .pairs()
            .filter(|(k, _)| !matches!(*k, "span_id" | "span_name" | "trace_id"))
            .collect();
        for (k, v) in &s.labels {
            if k == "span_id" || k == "span_name" {
                continue;
            }
            assert_eq!(
                sent.get(k.as_str()),
                Some(&v.as_str()),
                "pair {k:?} of {hex}"
            );
        }
        // `span_id`, the `span_name` when the set has one (an empty name gives none), the
        // pairs.
        let whole = sent.len() + 1 + usize::from(labels.span_name().is_some());
        if s.labels.len() < whole {
            assert!(report.stats.label_keys_removed > 0, "{:?}", report.stats);
        }
        checked += 1;
    }
    assert!(checked > 100, "only {checked} labelled samples checked");
}

#[test]
fn arbitrary_tags_are_refused_clearly_or_uploaded_within_the_servers_rules() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let receiver = Receiver::start();
    let mut rng = Rng::new(0x7a65);
    let mut uploaded = 0;
    for i in 0..400 {
        let (k, v) = (key(&mut rng), arbitrary(&mut rng, true));
        let protocol = if i % 2 == 0 {
            Protocol::Push
        } else {
            Protocol::Ingest
        };
        let builder = upload_util::builder(&receiver.url())
            .protocol(protocol)
            .tag(k.clone(), v.clone());
        match config(builder.clone()) {
            Err(err) => {
                let message = err.to_string();
                assert!(
                    message.contains("tag") || message.contains("label"),
                    "the error for tag {k:?} does not say which option: {message}"
                );
            }
            // Upload a sample of the accepted ones (each upload takes a request).
            Ok(_) if uploaded < 40 => {
                let uploader = upload_util::start(builder);
                uploader.enqueue(upload_util::small_window());
                let report = uploader.stop(Duration::from_secs(5));
                assert_eq!(report.delivered, 1, "tag {k:?}={v:?}: {report:?}");
                uploaded += 1;
            }
            Ok(_) => {}
        }
    }
    assert!(uploaded >= 10, "too few tags accepted ({uploaded})");
    let received = receiver.assert_all_valid();
    assert_eq!(received.len(), uploaded);
}

#[test]
fn arbitrary_environment_variables_are_refused_clearly_naming_the_variable() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    const VARS: [&str; 5] = [
        "PYROSCOPE_LABELS",
        "PYROSCOPE_APPLICATION_NAME",
        "PYROSCOPE_UPLOAD_INTERVAL",
        "PYROSCOPE_SAMPLE_RATE",
        "PYROSCOPE_SERVER_ADDRESS",
    ];
    let mut rng = Rng::new(0xe4);
    let mut accepted = 0;
    for _ in 0..400 {
        let var = VARS[rng.range(0, VARS.len() as u64) as usize];
        // The environment cannot hold NUL.
        let value = arbitrary(&mut rng, false);
        std::env::set_var(var, &value);
        if var != "PYROSCOPE_SERVER_ADDRESS" {
            std::env::set_var("PYROSCOPE_SERVER_ADDRESS", "http://127.0.0.1:4040");
        }
        let builder = ProfilerBuilder::from_env().application_name_if_unset();
        if var == "PYROSCOPE_SERVER_ADDRESS" && value.trim().is_empty() {
            // An empty variable counts as unset: no server, nothing to upload.
            assert!(config(builder).is_err());
            for v in VARS {
                std::env::remove_var(v);
            }
            continue;
        }
        match config(builder) {
            Ok(_) => accepted += 1,
            Err(err) => {
                let message = err.to_string();
                // Parse and range errors alike name the variable the value came from.
                assert!(
                    message.contains(&format!("`{var}`")),
                    "{var}={value:?}: the error does not name the variable: {message}"
                );
            }
        }
        for v in VARS {
            std::env::remove_var(v);
        }
    }
    assert!(accepted > 0);
}

/// Gives the builder an application name when the environment did not.
trait NameIfUnset {
    fn application_name_if_unset(self) -> Self;
}

impl NameIfUnset for ProfilerBuilder {
    fn application_name_if_unset(self) -> Self {
        match std::env::var("PYROSCOPE_APPLICATION_NAME") {
            Ok(v) if !v.trim().is_empty() => self,
            _ => self.application_name("env-test"),
        }
    }
}
