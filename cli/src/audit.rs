//! `seccompctl audit [--since T]`: the registry's log of mutating calls.

use anyhow::{Result, anyhow};
use seccomp_proto::registry::v1 as pb;
use serde::Serialize;

use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, print_structured, print_table, table};

/// Arguments of `seccompctl audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only entries at or after this time (RFC 3339, for example 2025-01-31T12:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<prost_types::Timestamp>,
}

fn parse_time(s: &str) -> Result<prost_types::Timestamp> {
    s.parse()
        .map_err(|_| anyhow!("expected an RFC 3339 time such as 2025-01-31T12:00:00Z"))
}

#[derive(Debug, Serialize)]
struct Output {
    entries: Vec<Entry>,
}

#[derive(Debug, Serialize)]
struct Entry {
    time: String,
    actor: String,
    method: String,
    target: String,
    result: String,
    message: String,
}

/// Run the command against the registry at `url`.
pub fn run(args: &Args, url: &str, format: Format) -> Result<Outcome> {
    let runtime = client::runtime()?;
    runtime.block_on(async {
        let mut client = client::registry(url).await?;
        let mut entries = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListAuditRequest {
                since: args.since,
                page_size: 1000,
                page_token,
            };
            let page = match client.list_audit(request).await {
                Ok(r) => r.into_inner(),
                Err(status) => return client::refused(status, Service::Registry, url),
            };
            entries.extend(page.entries.into_iter().map(|e| Entry {
                time: e.time.map(|t| t.to_string()).unwrap_or_default(),
                actor: e.actor,
                method: e.method,
                target: e.target,
                result: e.result,
                message: e.message,
            }));
            page_token = page.next_page_token;
            if page_token.is_empty() {
                break;
            }
        }
        let out = Output { entries };
        if !print_structured(format, &out)? {
            let mut t = table(["TIME", "ACTOR", "METHOD", "TARGET", "RESULT", "MESSAGE"]);
            for e in &out.entries {
                t.add_row(vec![
                    e.time.clone(),
                    e.actor.clone(),
                    e.method.clone(),
                    e.target.clone(),
                    e.result.clone(),
                    e.message.clone(),
                ]);
            }
            print_table(&t);
        }
        Ok(Outcome::Ok)
    })
}
