//! Opening a database whose file lock a handle just dropped (or a predecessor still
//! exiting) holds: sled lets go of its lock only once its I/O threads are done, a moment
//! after the handle is dropped, so an open that finds the lock taken is retried for a while
//! before its error is returned.

use std::time::{Duration, Instant};

/// How long [`open_retrying`] waits for a locked database.
pub const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Call `open` until it succeeds, fails otherwise than on a taken lock (its error says
/// `could not acquire lock`), or [`LOCK_WAIT`] has passed. Blocks meanwhile.
pub fn open_retrying<T, E: std::fmt::Display>(
    mut open: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match open() {
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_lock_is_retried_and_other_errors_are_not() {
        let mut tries = 0;
        let opened: Result<u32, String> = open_retrying(|| {
            tries += 1;
            if tries < 3 {
                Err("IO error: could not acquire lock on db".to_owned())
            } else {
                Ok(7)
            }
        });
        assert_eq!(opened, Ok(7));
        assert_eq!(tries, 3);
        let mut tries = 0;
        let failed: Result<u32, String> = open_retrying(|| {
            tries += 1;
            Err("corrupt".to_owned())
        });
        assert_eq!(failed, Err("corrupt".to_owned()));
        assert_eq!(tries, 1);
    }
}
