//! Every RPC of every service in the descriptor set has an access rule, so a new RPC added
//! without one fails here rather than being refused (or worse) at run time.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use prost::Message;
use seccomp_server::auth::{self, Access};

#[test]
fn every_rpc_has_a_rule() {
    let set = prost_types::FileDescriptorSet::decode(seccomp_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut paths = Vec::new();
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    assert!(paths.len() >= 20, "the descriptor set lists {paths:?}");
    let missing: Vec<&String> = paths.iter().filter(|p| auth::rule(p).is_none()).collect();
    assert!(
        missing.is_empty(),
        "RPCs without an access rule: {missing:?}"
    );
    // The agent stream is the only agent RPC, and it is nothing else.
    let agent: Vec<&String> = paths
        .iter()
        .filter(|p| auth::rule(p) == Some(Access::Agent))
        .collect();
    assert_eq!(agent, ["/seccomp.agent.v1.AgentSync/Sync"]);
    // Rules for RPCs that do not exist are typos.
    let extra: Vec<&str> = auth::RULES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !p.ends_with("/*") && !paths.iter().any(|q| q == p))
        .collect();
    assert!(extra.is_empty(), "rules for no RPC: {extra:?}");
}
