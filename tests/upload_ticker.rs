//! A server that accepts but never answers must not stall the application: a 10 ms ticker
//! task in the application's own Tokio runtime never sees a gap over 250 ms while the
//! uploader waits out its timeouts. Its own test binary, so no other test's threads
//! compete for the two cores.
#![cfg(feature = "upload")]

#[path = "common/receiver.rs"]
mod receiver;
#[path = "common/upload_util.rs"]
mod upload_util;

use std::time::{Duration, Instant};

use receiver::{Fault, Receiver};
use upload_util::{builder, small_window, start, wait_until};

#[test]
fn a_server_that_never_answers_leaves_an_application_ticker_on_time() {
    let receiver = Receiver::start();
    receiver.script(std::iter::repeat_n(Fault::NeverAnswer, 1000));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let uploader = start(
        builder(&receiver.url())
            .request_timeout(Duration::from_millis(300))
            .retry_backoff(Duration::from_millis(20), Duration::from_millis(100)),
    );
    let ticker = runtime.spawn(async {
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        let mut worst = Duration::ZERO;
        let started = Instant::now();
        let mut ticks = 0u32;
        while started.elapsed() < Duration::from_secs(3) {
            interval.tick().await;
            worst = worst.max(last.elapsed());
            last = Instant::now();
            ticks += 1;
        }
        (worst, ticks)
    });
    for _ in 0..5 {
        uploader.enqueue(small_window());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (worst, ticks) = runtime.block_on(ticker).unwrap();
    let counts = uploader.counts();
    assert!(wait_until(Duration::from_secs(1), || receiver
        .received()
        .len()
        >= 3));
    let report = uploader.stop(Duration::from_millis(500));
    assert!(
        counts.uploads_failed >= 3,
        "the timeouts really happened: {counts:?}"
    );
    assert_eq!(report.delivered, 0);
    assert!(ticks >= 200, "{ticks} ticks in 3 s");
    assert!(
        worst <= Duration::from_millis(250),
        "the ticker saw a gap of {worst:?}"
    );
}
