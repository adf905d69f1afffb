//! Helpers shared by the CLI's test files (each `tests/*.rs` is its own crate and takes the
//! ones it needs with `mod common;`).

#![allow(dead_code)] // not every test file uses every helper
#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::io::BufRead as _;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a command did when its reader went away after the first line.
pub struct Closed {
    /// The line read before closing the pipe.
    pub first_line: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it wrote on standard error.
    pub stderr: String,
}

/// Runs `cmd` with standard output into a pipe, reads one line, closes the pipe as
/// `| head -1` does, and waits (at most 60 s) for the command to exit.
pub fn head_1(mut cmd: Command) -> Closed {
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err.reopen().unwrap())
        .spawn()
        .unwrap();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first_line = String::new();
    reader.read_line(&mut first_line).unwrap();
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not exit within 60 s after its reader went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Closed {
        first_line,
        status,
        stderr: std::fs::read_to_string(err.path()).unwrap(),
    }
}

/// Asserts that a command whose reader went away ended as a Unix tool does: with `code`,
/// not killed, and without a panic or a word about the pipe on standard error.
pub fn assert_quiet(closed: &Closed, code: i32) {
    assert_eq!(
        closed.status.code(),
        Some(code),
        "{:?}; stderr: {}",
        closed.status,
        closed.stderr
    );
    for needle in ["panicked", "Broken pipe", "backtrace"] {
        assert!(
            !closed.stderr.contains(needle),
            "{needle:?} on stderr: {}",
            closed.stderr
        );
    }
}
