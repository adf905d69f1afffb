//! `seccompctl validate FILE...`: offline validation with the `seccomp-profile` library.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use anyhow::Result;
use seccomp_profile::{Code, Diagnostic, Options, Severity};
use serde::Serialize;

use crate::Outcome;
use crate::output::{Format, errln, outln, print_structured};

/// Arguments of `seccompctl validate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Profile files to check (`-` for standard input).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,

    /// Refuse files larger than this many bytes, without reading them whole.
    #[arg(long, env = "SECCOMP_MAX_BYTES", default_value_t = seccomp_profile::DEFAULT_MAX_BYTES)]
    max_bytes: usize,
}

#[derive(Debug, Serialize)]
struct Output {
    results: Vec<FileResult>,
}

#[derive(Debug, Serialize)]
struct FileResult {
    file: String,
    valid: bool,
    /// `sha256:<hex>`; absent when the file was not read (I/O error, over the size limit).
    digest: Option<String>,
    diagnostics: Vec<Diagnostic>,
    /// Why the file could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

enum Loaded {
    Bytes(Vec<u8>),
    TooLarge(u64),
}

/// Read at most `max + 1` bytes, so a huge file or an endless pipe costs bounded memory.
fn read_bounded(path: &PathBuf, max: usize) -> io::Result<Loaded> {
    let limit = max as u64 + 1;
    let mut buf = Vec::new();
    if path.as_os_str() == "-" {
        io::stdin().lock().take(limit).read_to_end(&mut buf)?;
    } else {
        let file = File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory",
            ));
        }
        if meta.is_file() && meta.len() > max as u64 {
            return Ok(Loaded::TooLarge(meta.len()));
        }
        file.take(limit).read_to_end(&mut buf)?;
    }
    if buf.len() > max {
        return Ok(Loaded::TooLarge(buf.len() as u64));
    }
    Ok(Loaded::Bytes(buf))
}

fn check(path: &PathBuf, options: &Options) -> FileResult {
    let file = path.display().to_string();
    match read_bounded(path, options.max_bytes) {
        Ok(Loaded::Bytes(bytes)) => {
            let report = seccomp_profile::validate(&bytes, options);
            FileResult {
                file,
                valid: report.is_valid(),
                digest: Some(report.digest),
                diagnostics: report.diagnostics,
                error: None,
            }
        }
        Ok(Loaded::TooLarge(size)) => FileResult {
            file,
            valid: false,
            digest: None,
            diagnostics: vec![Diagnostic::new(
                Code::FileTooLarge,
                "",
                format!(
                    "the file is {}{size} bytes, over the limit of {} bytes (--max-bytes)",
                    if path.as_os_str() == "-" { "over " } else { "" },
                    options.max_bytes
                ),
            )],
            error: None,
        },
        Err(e) => FileResult {
            file,
            valid: false,
            digest: None,
            diagnostics: Vec::new(),
            error: Some(format!("cannot read: {e}")),
        },
    }
}

/// Run the command.
pub fn run(args: &Args, format: Format) -> Result<Outcome> {
    let options = Options {
        max_bytes: args.max_bytes,
    };
    let results: Vec<FileResult> = args.files.iter().map(|f| check(f, &options)).collect();
    let io_error = results.iter().any(|r| r.error.is_some());
    let all_valid = results.iter().all(|r| r.valid);
    let output = Output { results };

    if !print_structured(format, &output)? {
        for r in &output.results {
            if let Some(e) = &r.error {
                errln!("{}: {e}", r.file);
                continue;
            }
            let errors = r
                .diagnostics
                .iter()
                .filter(|d| d.severity == Severity::Error)
                .count();
            let warnings = r.diagnostics.len() - errors;
            let verdict = match (r.valid, warnings) {
                (true, 0) => "ok".to_owned(),
                (true, 1) => "ok with 1 warning".to_owned(),
                (true, n) => format!("ok with {n} warnings"),
                (false, _) => format!(
                    "invalid ({errors} error{}{})",
                    if errors == 1 { "" } else { "s" },
                    match warnings {
                        0 => String::new(),
                        1 => ", 1 warning".to_owned(),
                        n => format!(", {n} warnings"),
                    }
                ),
            };
            outln!("{}: {verdict}", r.file);
            for d in &r.diagnostics {
                outln!("  {d}");
            }
        }
    }
    if io_error {
        anyhow::bail!("some files could not be read");
    }
    Ok(if all_valid {
        Outcome::Ok
    } else {
        Outcome::Negative
    })
}
