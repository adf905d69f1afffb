//! Rendering the seed's profile must give the seed's NodeConfigItem
//! (`../shared/fixtures/seed/nci-seccomp-profile.yaml`), compared as parsed YAML; the only
//! addition is our metadata (labels and annotations that say who produced the object).

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::path::PathBuf;

use seccomp_rollout::nci::{self, ProfileRef, Target};
use seccomp_rollout::selector;
use serde_yaml_ng::Value;

fn seed_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("SECCOMP_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
        .join("seed");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "SKIPPED: seed fixtures not found at {} (set SECCOMP_FIXTURES)",
            dir.display()
        );
        None
    }
}

#[test]
fn renders_the_seed_nci() {
    let Some(dir) = seed_dir() else { return };
    let profile = std::fs::read(dir.join("myprofile.json")).unwrap();
    let expected: Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(dir.join("nci-seccomp-profile.yaml")).unwrap(),
    )
    .unwrap();

    let target = Target::new(selector::parse("kubernetes.io/os=linux").unwrap());
    let rendered = nci::render(
        ProfileRef {
            name: "myprofile",
            version: 1,
            content: &profile,
        },
        &target,
        Some("seccomp-profile"),
        None,
    )
    .unwrap();
    let yaml = rendered.to_yaml().unwrap();
    let mut actual: Value = serde_yaml_ng::from_str(&yaml).unwrap();

    // Our provenance metadata is the one intended difference.
    let meta = actual
        .get_mut("metadata")
        .unwrap()
        .as_mapping_mut()
        .unwrap();
    let labels = meta.remove("labels").unwrap();
    assert_eq!(
        labels.get("app.kubernetes.io/managed-by").unwrap(),
        "seccomp-distributor"
    );
    assert_eq!(
        labels.get("seccomp-distributor.io/profile").unwrap(),
        "myprofile"
    );
    assert_eq!(labels.get("seccomp-distributor.io/version").unwrap(), "1");
    let annotations = meta.remove("annotations").unwrap();
    assert_eq!(
        annotations
            .get("seccomp-distributor.io/digest")
            .unwrap()
            .as_str()
            .unwrap(),
        seccomp_profile::digest(&profile)
    );

    // `content` is the published bytes; the seed's `|-` block drops the final newline.
    let content = |v: &Value| {
        v["spec"]["files"][1]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(content(&actual).as_bytes(), profile.as_slice());
    assert_eq!(content(&actual).trim_end_matches('\n'), content(&expected));
    let trimmed = content(&actual).trim_end_matches('\n').to_owned();
    actual["spec"]["files"][1]["content"] = Value::String(trimmed);
    assert_eq!(actual, expected, "rendered:\n{yaml}");

    // The mode is a quoted string in the YAML text, as the platform requires.
    assert!(
        yaml.contains("mode: '0644'") || yaml.contains("mode: \"0644\""),
        "{yaml}"
    );
}

#[test]
fn json_output_has_the_same_document() {
    let target = Target::new(selector::parse("kubernetes.io/os=linux").unwrap());
    let n = nci::render(
        ProfileRef {
            name: "p",
            version: 2,
            content: b"{\"defaultAction\":\"SCMP_ACT_LOG\"}\n",
        },
        &target,
        None,
        Some("r-7"),
    )
    .unwrap();
    let from_json: serde_json::Value = serde_json::from_str(&n.to_json().unwrap()).unwrap();
    let from_yaml: serde_json::Value = serde_yaml_ng::from_str(&n.to_yaml().unwrap()).unwrap();
    assert_eq!(from_json, from_yaml);
    assert_eq!(
        from_json["spec"]["files"][1]["content"],
        "{\"defaultAction\":\"SCMP_ACT_LOG\"}\n"
    );
    assert_eq!(
        from_json["metadata"]["labels"]["seccomp-distributor.io/rollout"],
        "r-7"
    );
}

#[test]
fn content_is_a_readable_block() {
    let target = Target::new(selector::parse("kubernetes.io/os=linux").unwrap());
    let n = nci::render(
        ProfileRef {
            name: "p",
            version: 2,
            content: b"{\n  \"defaultAction\": \"SCMP_ACT_LOG\"\n}\n",
        },
        &target,
        None,
        None,
    )
    .unwrap();
    let yaml = n.to_yaml().unwrap();
    println!("{yaml}");
    assert!(
        yaml.contains("content: |"),
        "multi-line content is a literal block:\n{yaml}"
    );
}
