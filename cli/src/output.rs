//! Output shared by every command: the formats (a human table, JSON, YAML) and the only
//! writers to standard output and standard error.
//!
//! Commands print with [`outln!`] and [`out!`] (standard output) and [`errln!`] (standard
//! error), never with `println!`, which panics when the reader has gone away
//! (`seccompctl rollout list | head -3`). Here the first write that meets a closed pipe
//! closes standard output for the rest of the run, quietly: later output is dropped, the
//! command finishes and exits with its own status, as a Unix tool stops at a closed pipe
//! without complaint. Any other write error (a full disk) is kept, the rest of the output
//! dropped, and [`finish`] hands it to `main`, which reports it once (exit 2). Standard error
//! has nowhere to report its own failures, so they are ignored.

use std::fmt;
use std::io::{self, Write as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use anyhow::Result;
use serde::Serialize;

/// How a command prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable text.
    Table,
    /// One JSON document.
    Json,
    /// One YAML document.
    Yaml,
}

/// Set once a write to standard output failed: nothing more is written.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
/// The first failure of standard output that was not a closed pipe.
static STDOUT_ERROR: Mutex<Option<io::Error>> = Mutex::new(None);

/// `println!` through [`write_stdout`].
macro_rules! outln {
    () => {
        $crate::output::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` through [`write_stdout`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write_stdout(format_args!($($arg)*))
    };
}

/// `eprintln!` through [`write_stderr`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {errln, out, outln};

/// Write to standard output unless it is closed (see the module docs).
pub fn write_stdout(text: fmt::Arguments<'_>) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = io::stdout().lock().write_fmt(text) {
        stdout_failed(e);
    }
}

/// Write bytes as they are to standard output unless it is closed (`profile get --raw`).
pub fn write_stdout_bytes(bytes: &[u8]) {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = io::stdout().lock().write_all(bytes) {
        stdout_failed(e);
    }
}

/// Push out what is buffered, for text without a line end (a redrawn progress display).
pub fn flush_stdout() {
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = io::stdout().lock().flush() {
        stdout_failed(e);
    }
}

fn stdout_failed(e: io::Error) {
    STDOUT_CLOSED.store(true, Ordering::Relaxed);
    if e.kind() != io::ErrorKind::BrokenPipe {
        STDOUT_ERROR
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert(e);
    }
}

/// Flush standard output at the end of a run; the first write error that was not a closed
/// pipe, if any.
pub fn finish() -> io::Result<()> {
    flush_stdout();
    match STDOUT_ERROR
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Write to standard error, ignoring failures (see the module docs).
pub fn write_stderr(text: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(text);
}

/// Print a machine-readable document in the chosen format; `false` for `Table`, which the
/// caller prints itself.
pub fn print_structured<T: Serialize>(format: Format, value: &T) -> Result<bool> {
    match format {
        Format::Table => Ok(false),
        Format::Json => {
            outln!("{}", serde_json::to_string_pretty(value)?);
            Ok(true)
        }
        Format::Yaml => {
            out!("{}", serde_yaml_ng::to_string(value)?);
            Ok(true)
        }
    }
}

/// A plain, borderless table with a header row, in the style of `kubectl get`.
pub fn table<const N: usize>(header: [&str; N]) -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::NOTHING)
        .set_header(header);
    for i in 0..N {
        if let Some(column) = table.column_mut(i) {
            column.set_padding((0, 2));
        }
    }
    table
}

/// Print a table without the padding at the end of each line.
pub fn print_table(table: &comfy_table::Table) {
    for line in table.lines() {
        outln!("{}", line.trim_end());
    }
}
