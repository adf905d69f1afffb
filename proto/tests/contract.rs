//! Checks the parts of the generated contract that other crates rely on
//! beyond the message types themselves.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::BTreeMap;

use prost::Message as _;
use prost_types::{Any, FileDescriptorSet};
use seccomp_proto::{
    FILE_DESCRIPTOR_SET,
    registry::v1::{Diagnostic, Severity, ValidationFailure},
};

/// Every service of the descriptor set with its rpc names, in file order.
fn services() -> BTreeMap<String, Vec<String>> {
    let fds = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let mut services = BTreeMap::new();
    for file in &fds.file {
        for service in &file.service {
            let name = format!("{}.{}", file.package(), service.name());
            let methods = service.method.iter().map(|m| m.name().to_owned()).collect();
            services.insert(name, methods);
        }
    }
    services
}

#[test]
fn descriptor_set_exports_every_service_for_reflection() {
    let services = services();
    let rpcs = |name: &str| services.get(name).cloned().unwrap_or_default();
    assert_eq!(
        rpcs("seccomp.registry.v1.Registry"),
        [
            "Publish",
            "ValidateProfile",
            "GetProfile",
            "ListProfiles",
            "History",
            "Diff",
            "Deprecate",
            "DeleteVersion",
            "ListAudit",
            "SetPolicy",
        ]
    );
    assert_eq!(
        rpcs("seccomp.distributor.v1.Distributor"),
        [
            "CreateRollout",
            "PlanRollout",
            "RetireNci",
            "GetRollout",
            "ListRollouts",
            "PauseRollout",
            "ResumeRollout",
            "AbortRollout",
            "Rollback",
            "WatchRollout",
            "ListNodes",
            "RenderNci",
            "ListAudit",
            "ListSeccompEvents",
        ]
    );
    assert_eq!(rpcs("seccomp.agent.v1.AgentSync"), ["Sync"]);
    assert_eq!(services.len(), 3, "unexpected services: {services:?}");
}

#[test]
fn validation_failure_packs_into_any_with_the_documented_type_url() {
    let failure = ValidationFailure {
        diagnostics: vec![Diagnostic {
            severity: Severity::Error.into(),
            code: "missing-default-action".to_owned(),
            path: String::new(),
            message: "defaultAction is required".to_owned(),
        }],
    };
    let any = Any::from_msg(&failure).expect("encodes");
    assert_eq!(
        any.type_url,
        "type.googleapis.com/seccomp.registry.v1.ValidationFailure"
    );
    assert_eq!(any.to_msg::<ValidationFailure>().expect("decodes"), failure);
}
