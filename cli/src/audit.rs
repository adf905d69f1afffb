//! `seccompctl audit [--since T] [--service S]`: the audit logs of both services (the
//! registry's mutating calls, the distributor's commands, and the calls either refused),
//! merged oldest first, each entry saying which service recorded it.

use anyhow::{Result, anyhow};
use seccomp_proto::distributor::v1::ListAuditRequest as DistributorAudit;
use seccomp_proto::registry::v1::ListAuditRequest as RegistryAudit;
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

/// Every page of one service's log, fetched by `page` (given the page token, it answers
/// the entries and the next token); or the outcome of the service's refusal.
async fn all_pages<F, Fut>(
    service: Service,
    url: &str,
    mut page: F,
) -> Result<Result<Vec<Entry>, Outcome>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<(Vec<Entry>, String)>, tonic::Status>>,
{
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let (entries, next) = match client::answer(page(token).await, service, url)? {
            Ok(page) => page,
            Err(outcome) => return Ok(Err(outcome)),
        };
        out.extend(entries);
        if next.is_empty() {
            return Ok(Ok(out));
        }
        token = next;
    }
}

/// One service's entries: both services' `ListAudit` messages have the same fields, so one
/// body serves both.
macro_rules! entries_of {
    ($client:expr, $service:expr, $label:literal, $request:ident, $since:expr, $url:expr) => {{
        let client = $client;
        all_pages($service, $url, |page_token| {
            let mut client = client.clone();
            async move {
                let request = $request {
                    since: $since,
                    page_size: 1000,
                    page_token,
                };
                let reply = client.list_audit(request).await?;
                Ok(reply.map(|p| {
                    let entries = p.entries.into_iter().map(|e| {
                        entry(
                            $label,
                            e.time,
                            [e.actor, e.method, e.target, e.result, e.message],
                        )
                    });
                    (entries.collect(), p.next_page_token)
                }))
            }
        })
        .await
    }};
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
            let client = client::registry(registry_url).await?;
            let found = entries_of!(
                client,
                Service::Registry,
                "registry",
                RegistryAudit,
                args.since,
                registry_url
            );
            match found? {
                Ok(e) => entries.extend(e),
                Err(outcome) => return Ok(outcome),
            }
        }
        if args.service != Which::Registry {
            let client = client::distributor(distributor_url).await?;
            let found = entries_of!(
                client,
                Service::Distributor,
                "distributor",
                DistributorAudit,
                args.since,
                distributor_url
            );
            match found? {
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
