//! Waiting for a condition a user would see, instead of sleeping a fixed time.

use std::time::{Duration, Instant};

/// Calls `check` every 50 ms until it returns `Ok`, and returns that value; after `timeout`
/// fails the test naming `what` and the last `Err` (what was seen instead).
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("waited {timeout:?} for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}
