//! Following a rollout live (`rollout status --watch`, `--wait` of `rollout create` and
//! `rollback`, the `dev` demo): the distributor's `WatchRollout` stream until the rollout
//! ends, shown as bars per wave redrawn in place on a terminal, or a line per change.

use std::io::IsTerminal as _;
use std::time::Duration;

use anyhow::{Result, bail};
use seccomp_proto::distributor::v1 as pb;
use tokio_stream::StreamExt as _;

use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, errln, flush_stdout, out, outln, print_structured};
use crate::rollout::view::{RolloutOut, progress_line, transition_line, wave_lines};

/// Follow the rollout's events (`WatchRollout`) until it ends or `timeout` passes: bars per
/// wave redrawn in place on a terminal, a line per change otherwise. Completed is
/// `Outcome::Ok`; rolled back, aborted or out of time is `Outcome::Negative` with the reason
/// on standard error.
pub async fn follow(
    c: &mut client::Distributor,
    id: &str,
    dist: &str,
    format: Format,
    timeout: Option<Duration>,
) -> Result<Outcome> {
    let (outcome, last) = follow_to_end(c, id, dist, format, timeout).await?;
    if let Some(out) = last {
        print_structured(format, &out)?;
    }
    Ok(outcome)
}

/// [`follow`] without printing the final rollout as a document: returns it.
pub async fn follow_to_end(
    c: &mut client::Distributor,
    id: &str,
    dist: &str,
    format: Format,
    timeout: Option<Duration>,
) -> Result<(Outcome, Option<RolloutOut>)> {
    let request = pb::WatchRolloutRequest { id: id.to_owned() };
    let mut events =
        match client::answer(c.watch_rollout(request).await, Service::Distributor, dist)? {
            Ok(s) => s,
            Err(outcome) => return Ok((outcome, None)),
        };
    let live = format == Format::Table && std::io::stdout().is_terminal();
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut last: Option<RolloutOut> = None;
    let mut drawn = 0usize;
    let mut seen_history = 0usize;
    let mut timed_out = false;
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, events.next()).await {
                Ok(n) => n,
                Err(_) => {
                    timed_out = true;
                    break;
                }
            },
            None => events.next().await,
        };
        let Some(event) = next else { break };
        let event = match event {
            Ok(e) => e,
            Err(status) => {
                return client::refused(status, Service::Distributor, dist).map(|o| (o, None));
            }
        };
        let Some(rollout) = event.rollout else {
            continue;
        };
        let out = RolloutOut::from(&rollout);
        let fresh: Vec<String> = out
            .history
            .iter()
            .skip(seen_history)
            .map(transition_line)
            .collect();
        seen_history = out.history.len();
        if live {
            // Move up over the previous drawing, print new transitions, redraw the bars.
            if drawn > 0 {
                out!("\x1b[{drawn}A\r");
            }
            for line in &fresh {
                outln!("\x1b[2K{line}");
            }
            let mut lines = vec![progress_line(&out)];
            lines.extend(wave_lines(&out));
            for line in &lines {
                outln!("\x1b[2K{line}");
            }
            drawn = lines.len();
            flush_stdout();
        } else if format == Format::Table {
            for line in &fresh {
                outln!("{line}");
            }
            outln!("{}", progress_line(&out));
        }
        let done = out.terminal();
        last = Some(out);
        if done {
            break;
        }
    }
    let Some(out) = last else {
        bail!("the distributor ended the watch of rollout {id} without any event");
    };
    let reason = out
        .history
        .iter()
        .rev()
        .find(|t| t.state != "RolledBack")
        .map_or("", |t| t.reason.as_str());
    match out.state {
        "Completed" => return Ok((Outcome::Ok, Some(out))),
        "RolledBack" => errln!("seccompctl: rollout {id} was rolled back: {reason}"),
        "Aborted" => errln!("seccompctl: rollout {id} was aborted: {reason}"),
        state if timed_out => {
            let t = timeout.unwrap_or_default();
            errln!(
                "seccompctl: rollout {id} did not end within {} (it is {state}); see `seccompctl rollout status {id}`",
                humantime::format_duration(t)
            );
            if state == "Paused" {
                errln!("seccompctl: it is paused: `seccompctl rollout resume {id}` continues it");
            }
        }
        state => errln!("seccompctl: the watch of rollout {id} ended while it was {state}"),
    }
    Ok((Outcome::Negative, Some(out)))
}
