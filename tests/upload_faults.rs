//! The uploader against a bad network: each fault of issue 5 in its own test, over
//! 127.0.0.1, with the strict receiver and real pieces from the real encoder.
#![cfg(feature = "upload")]

#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/upload_util.rs"]
mod upload_util;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use receiver::{unused_addr, Fault, Receiver};
use upload_util::{builder, captured_logs, label_ids, small_window, start, wait_until, window};

fn accepted(receiver: &Receiver) -> usize {
    receiver
        .received()
        .iter()
        .filter(|r| r.answered == 200)
        .count()
}

#[test]
fn a_500_twice_then_200_is_delivered_exactly_once() {
    let receiver = Receiver::start();
    receiver.script([Fault::Status(500), Fault::Status(500)]);
    let uploader = start(builder(&receiver.url()));
    uploader.enqueue(small_window());
    receiver.wait_for(3, Duration::from_secs(10));
    // Well past the longest backoff: nothing more may come.
    std::thread::sleep(Duration::from_millis(600));
    let report = uploader.stop(Duration::from_secs(2));
    let received = receiver.assert_all_valid();
    assert_eq!(received.len(), 3, "{received:#?}");
    assert_eq!(accepted(&receiver), 1);
    assert_eq!(report.delivered, 1);
    assert_eq!(report.counts.uploads_ok, 1);
    assert_eq!(report.counts.uploads_failed, 2);
    assert_eq!(report.counts.retries, 2);
    assert_eq!(report.lost, 0);
    assert!(report.flushed);
    assert_eq!(report.counts.bytes_sent, received[2].body_len as u64);
}

#[test]
fn a_429_is_retried_no_sooner_than_the_minimum_backoff() {
    let receiver = Receiver::start();
    receiver.script([Fault::Status(429)]);
    let min = Duration::from_millis(300);
    let uploader = start(builder(&receiver.url()).retry_backoff(min, Duration::from_secs(1)));
    uploader.enqueue(small_window());
    let received = receiver.wait_for(2, Duration::from_secs(10));
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= min,
        "second attempt after {gap:?}, before the minimum backoff {min:?}"
    );
    assert_eq!(received[1].answered, 200);
    let report = uploader.stop(Duration::from_secs(2));
    assert_eq!((report.delivered, report.counts.retries), (1, 1));
}

#[test]
fn retry_after_of_a_429_is_honoured_within_the_maximum_backoff() {
    let receiver = Receiver::start();
    receiver.script([Fault::RetryAfter(1)]);
    let uploader = start(
        builder(&receiver.url()).retry_backoff(Duration::from_millis(50), Duration::from_secs(3)),
    );
    uploader.enqueue(small_window());
    let received = receiver.wait_for(2, Duration::from_secs(10));
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_secs(1),
        "Retry-After: 1 ignored ({gap:?})"
    );
    assert_eq!(uploader.stop(Duration::from_secs(2)).delivered, 1);
}

#[test]
fn a_422_from_the_push_api_is_not_retried_and_is_counted_and_logged_once() {
    let logs = captured_logs();
    let receiver = Receiver::start();
    receiver.script([Fault::Status(422), Fault::Status(422)]);
    let uploader = start(builder(&receiver.url()));
    uploader.enqueue(small_window());
    uploader.enqueue(small_window());
    receiver.wait_for(2, Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(600));
    let counts = uploader.counts();
    let report = uploader.stop(Duration::from_secs(2));
    assert_eq!(receiver.received().len(), 2, "a 422 must not be retried");
    assert_eq!(counts.dropped.rejected, 2);
    assert_eq!(counts.retries, 0);
    assert_eq!(counts.uploads_failed, 2);
    assert_eq!(report.delivered, 0);
    assert_eq!(report.lost, 2);
    let lines: Vec<String> = logs
        .lock()
        .unwrap()
        .iter()
        // The status with its reason: a bare "422" also matches another test's receiver
        // port (127.0.0.1:42201) in a log line, since the log capture is process-wide.
        .filter(|l| l.contains("422 Unprocessable Entity"))
        .cloned()
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains("scripted fault 422"),
        "the server's message is logged: {}",
        lines[0]
    );
    assert!(lines[0].starts_with("WARN span_profiler"), "{}", lines[0]);
}

#[test]
fn on_ingest_a_422_is_retried_three_times_then_refused_and_a_transient_one_is_delivered() {
    use span_profiler::{Protocol, INGEST_422_RETRIES};
    let receiver = Receiver::start();
    // First window: four 422s (the first attempt and three retries), then refused.
    // Second window: one transient 422, then delivered.
    receiver.script([
        Fault::Status(422),
        Fault::Status(422),
        Fault::Status(422),
        Fault::Status(422),
        Fault::Status(422),
    ]);
    let uploader = start(builder(&receiver.url()).protocol(Protocol::Ingest));
    uploader.enqueue(small_window());
    uploader.enqueue(small_window());
    receiver.wait_for(6, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(600));
    let report = uploader.stop(Duration::from_secs(2));
    let received = receiver.assert_all_valid();
    assert_eq!(received.len(), 6, "{received:#?}");
    assert_eq!(INGEST_422_RETRIES, 3);
    assert_eq!(
        report.counts.ingest_422_retries, 4,
        "3 for the first window, 1 for the second"
    );
    assert_eq!(report.counts.retries, 4);
    assert_eq!(report.counts.dropped.rejected, 1);
    assert_eq!(report.delivered, 1);
    assert_eq!(received[5].answered, 200);
    assert!(received.iter().all(|r| r.path == "/ingest"));
}

#[test]
fn a_push_body_the_server_cannot_decode_is_answered_500_and_dropped_after_max_upload_attempts() {
    let receiver = Receiver::start();
    let uploader = start(builder(&receiver.url()).max_upload_attempts(3));
    let now = SystemTime::now();
    let poisoned = span_profiler::__private::upload::UploadWindow::from_gzipped(
        vec![b"not a pprof profile".to_vec()],
        now - Duration::from_secs(1),
        now,
    );
    uploader.enqueue(poisoned);
    uploader.enqueue(small_window());
    receiver.wait_for(4, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(600));
    let report = uploader.stop(Duration::from_secs(2));
    let received = receiver.received();
    assert_eq!(
        received.len(),
        4,
        "3 attempts, then the next window: {received:#?}"
    );
    for r in &received[..3] {
        assert_eq!(
            r.answered, 500,
            "the server's answer to an undecodable profile"
        );
        assert!(r.verdict.as_ref().unwrap_err().contains("does not decode"));
    }
    assert_eq!(received[3].answered, 200, "the queue moved on");
    assert_eq!(report.counts.dropped.attempts_exhausted, 1);
    assert_eq!(report.counts.retries, 2);
    assert_eq!(report.lost, 1);
    assert_eq!(report.delivered, 1);
}

#[test]
fn a_server_that_never_answers_times_out_and_the_upload_is_retried() {
    let receiver = Receiver::start();
    receiver.script([Fault::NeverAnswer]);
    let timeout = Duration::from_millis(400);
    let uploader = start(builder(&receiver.url()).request_timeout(timeout));
    uploader.enqueue(small_window());
    let received = receiver.wait_for(2, Duration::from_secs(10));
    assert!(
        received[1].at - received[0].at >= timeout,
        "retried before the timeout"
    );
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
    // The hung connection is not reused: the retry came on a new one.
    assert!(receiver.connections() >= 2);
}

#[test]
fn refused_connections_are_retried_until_the_server_appears() {
    let addr = unused_addr();
    let uploader = start(builder(&format!("http://{addr}")));
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
    assert!(report.counts.retries >= 2);
}

#[test]
fn a_full_queue_drops_the_oldest_window_and_counts_it() {
    let receiver = Receiver::start();
    // The first attempt hangs until its timeout, so windows pile up behind it.
    receiver.script([Fault::NeverAnswer]);
    let uploader = start(
        builder(&receiver.url())
            .queue_capacity(2)
            .request_timeout(Duration::from_millis(800)),
    );
    // Encoded first: encoding (symbolization) takes longer than the hang.
    let windows: Vec<_> = [50u64, 40, 30, 20]
        .iter()
        .map(|age| {
            let (w, pieces) = window(3, &[], Duration::from_secs(*age));
            assert_eq!(pieces, 1);
            w
        })
        .collect();
    let starts: Vec<SystemTime> = windows.iter().map(|w| w.start()).collect();
    for (i, w) in windows.into_iter().enumerate() {
        uploader.enqueue(w);
        if i == 0 {
            // The uploader has taken the first window off the queue.
            receiver.wait_for(1, Duration::from_secs(5));
        }
    }
    let counts = uploader.counts();
    assert_eq!(counts.dropped.queue_full, 1, "{counts:?}");
    assert_eq!(counts.windows_enqueued, 4);
    assert!(wait_until(Duration::from_secs(10), || uploader
        .counts()
        .uploads_ok
        == 3));
    let report = uploader.stop(Duration::from_secs(2));
    assert_eq!(report.lost, 1);
    // Which windows arrived, by their profiles' start times: the oldest *queued* window
    // (the second) was dropped; the one in flight was not.
    let arrived: BTreeSet<usize> = receiver
        .assert_all_valid()
        .iter()
        .filter(|r| r.answered == 200)
        .map(|r| {
            let t = UNIX_EPOCH + Duration::from_nanos(r.profiles[0].time_nanos as u64);
            starts
                .iter()
                .position(|s| s == &t)
                .expect("a profile of one of the windows")
        })
        .collect();
    assert_eq!(arrived, BTreeSet::from([0, 2, 3]), "windows delivered");
}

#[test]
fn stop_while_the_server_is_down_returns_within_its_deadline_and_reports_the_loss() {
    let addr = unused_addr();
    let uploader = start(builder(&format!("http://{addr}")));
    uploader.enqueue(small_window());
    uploader.enqueue(small_window());
    std::thread::sleep(Duration::from_millis(100));
    let deadline = Duration::from_secs(1);
    let started = Instant::now();
    let report = uploader.stop(deadline);
    let took = started.elapsed();
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
    assert_eq!(report.counts.dropped.stopped, 2);
    assert!(report.counts.uploads_failed >= 1);
}

#[test]
fn stop_uploads_what_is_queued_when_the_server_is_up() {
    let receiver = Receiver::start();
    receiver.script([Fault::Delay(Duration::from_millis(200))]);
    let uploader = start(builder(&receiver.url()));
    for _ in 0..3 {
        uploader.enqueue(small_window());
    }
    let report = uploader.stop(Duration::from_secs(5));
    assert!(report.flushed);
    assert_eq!((report.delivered, report.lost), (3, 0));
    assert_eq!(accepted(&receiver), 3);
}

#[test]
fn a_window_of_50000_distinct_stack_label_pairs_is_split_and_every_piece_is_delivered_valid() {
    let labels = label_ids(10);
    let (w, pieces) = window(5_000, &labels.ids, Duration::from_secs(10));
    let expected_weight: i64 = (0..5_000i64).map(|i| 1 + i % 3).sum::<i64>() * 10;
    assert!(
        pieces >= 4,
        "50,000 samples need at least 4 pieces of 16,000: {pieces}"
    );
    let receiver = Receiver::start();
    let uploader = start(builder(&receiver.url()));
    uploader.enqueue(w);
    let _received = receiver.wait_for(pieces, Duration::from_secs(30));
    let report = uploader.stop(Duration::from_secs(5));
    assert_eq!(report.delivered, pieces as u64);
    let received = receiver.assert_all_valid();
    assert_eq!(received.len(), pieces);
    let (mut samples, mut weight) = (0usize, 0i64);
    let mut spans = BTreeSet::new();
    for r in &received {
        let p = &r.profiles[0];
        assert!(p.sample.len() <= 16_000);
        samples += p.sample.len();
        for s in &p.sample {
            weight += s.value[0];
            let span = s
                .label
                .iter()
                .find(|l| p.string_table[l.key as usize] == "span_id")
                .expect("labelled");
            spans.insert(p.string_table[span.str as usize].clone());
        }
    }
    // Nothing lost by splitting: every (stack, labels) pair and all its weight arrived.
    assert_eq!(samples, 50_000);
    assert_eq!(weight, expected_weight);
    assert_eq!(spans.len(), 10);
}
