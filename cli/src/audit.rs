//! `seccompctl audit [--since T] [--service S]`: the audit logs of both services (the
//! registry's mutating calls, the distributor's commands, and the calls either refused),
//! merged oldest first, each entry saying which service recorded it.

use anyhow::{Result, anyhow};
use seccomp_proto::distributor::v1 as dpb;
use seccomp_proto::registry::v1 as rpb;
use serde::Serialize;

use crate::Outcome;
use crate::client::{self, Service};
use crate::output::{Format, print_structured, print_table, table};

/// Which audit log to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// Both, merged by time.
    All,
    /// The registry's: publish, deprecate, delete, refused calls.
    Registry,
    /// The distributor's: create, pause, resume, abort, roll back, refused calls.
    Distributor,
}

/// Arguments of `seccompctl audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only entries at or after this time (RFC 3339, for example 2025-01-31T12:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    since: Option<prost_types::Timestamp>,

    /// Whose log: both services (each must answer), or one.
    #[arg(long, value_enum, default_value = "all")]
    service: Which,
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
    service: &'static str,
    actor: String,
    method: String,
    target: String,
    result: String,
    message: String,
    #[serde(skip)]
    at: (i64, i32),
}

fn entry(
    service: &'static str,
    time: Option<prost_types::Timestamp>,
    fields: [String; 5],
) -> Entry {
    let [actor, method, target, result, message] = fields;
    Entry {
        time: time.map(|t| t.to_string()).unwrap_or_default(),
        at: time.map_or((0, 0), |t| (t.seconds, t.nanos)),
        service,
        actor,
        method,
        target,
        result,
        message,
    }
}

/// The registry's entries, every page; or the outcome of its refusal.
async fn registry(
    since: Option<prost_types::Timestamp>,
    url: &str,
) -> Result<Result<Vec<Entry>, Outcome>> {
    let mut client = client::registry(url).await?;
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = rpb::ListAuditRequest {
            since,
            page_size: 1000,
            page_token,
        };
        let page = match client::answer(client.list_audit(request).await, Service::Registry, url)? {
            Ok(page) => page,
            Err(outcome) => return Ok(Err(outcome)),
        };
        out.extend(page.entries.into_iter().map(|e| {
            entry(
                "registry",
                e.time,
                [e.actor, e.method, e.target, e.result, e.message],
            )
        }));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            return Ok(Ok(out));
        }
    }
}

/// The distributor's entries, every page; or the outcome of its refusal.
async fn distributor(
    since: Option<prost_types::Timestamp>,
    url: &str,
) -> Result<Result<Vec<Entry>, Outcome>> {
    let mut client = client::distributor(url).await?;
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = dpb::ListAuditRequest {
            since,
            page_size: 1000,
            page_token,
        };
        let page =
            match client::answer(client.list_audit(request).await, Service::Distributor, url)? {
                Ok(page) => page,
                Err(outcome) => return Ok(Err(outcome)),
            };
        out.extend(page.entries.into_iter().map(|e| {
            entry(
                "distributor",
                e.time,
                [e.actor, e.method, e.target, e.result, e.message],
            )
        }));
        page_token = page.next_page_token;
        if page_token.is_empty() {
            return Ok(Ok(out));
        }
    }
}

/// Run the command against the registry at `registry_url` and the distributor at
/// `distributor_url`.
pub fn run(
    args: &Args,
    registry_url: &str,
    distributor_url: &str,
    format: Format,
) -> Result<Outcome> {
    let runtime = client::runtime()?;
    runtime.block_on(async {
        let mut entries = Vec::new();
        if args.service != Which::Distributor {
            match registry(args.since, registry_url).await? {
                Ok(e) => entries.extend(e),
                Err(outcome) => return Ok(outcome),
            }
        }
        if args.service != Which::Registry {
            match distributor(args.since, distributor_url).await? {
                Ok(e) => entries.extend(e),
                Err(outcome) => return Ok(outcome),
            }
        }
        entries.sort_by_key(|e| e.at);
        let out = Output { entries };
        if !print_structured(format, &out)? {
            let mut t = table([
                "TIME", "SERVICE", "ACTOR", "METHOD", "TARGET", "RESULT", "MESSAGE",
            ]);
            for e in &out.entries {
                t.add_row(vec![
                    e.time.clone(),
                    e.service.to_owned(),
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
