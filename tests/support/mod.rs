//! Test harnesses shared by the integration tests; each test binary uses only some.
#![allow(dead_code)]

pub mod apiserver;
pub mod idp;
pub mod server;

use std::future::Future;
use std::time::{Duration, Instant};

/// How long a test waits for any one condition; generous for a loaded 2-core CI machine.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it holds, failing the test with `what` after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    #[allow(clippy::panic)]
    {
        panic!("timed out after {WAIT:?} waiting until {what}");
    }
}
