//! Validation never panics and always answers with well-formed diagnostics, whatever the
//! input: arbitrary bytes, arbitrary JSON, and profile-shaped documents whose fields hold
//! values of random types.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use proptest::prelude::*;
use seccomp_profile::{Options, Severity, validate};
use serde_json::{Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e30f64..1e30).prop_map(Value::from),
        "[a-zA-Z_]{0,12}".prop_map(Value::String),
        proptest::sample::select(vec![
            "SCMP_ACT_ALLOW",
            "SCMP_ACT_ERRNO",
            "SCMP_ACT_NOTIFY",
            "SCMP_ARCH_X86_64",
            "SCMP_CMP_MASKED_EQ",
            "read",
            "write",
            "4.8",
            ""
        ])
        .prop_map(|s| Value::String(s.to_owned())),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z]{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A profile whose every field is present but holds a random value.
fn arb_profile_shaped() -> impl Strategy<Value = Value> {
    (arb_json(), arb_json(), arb_json(), arb_json(), arb_json(), arb_json(), arb_json(), arb_json()).prop_map(
        |(default, ret, arches, flags, names, action, args, includes)| {
            json!({
                "defaultAction": default,
                "defaultErrnoRet": ret,
                "architectures": arches,
                "flags": flags,
                "syscalls": [
                    {"names": names, "action": action, "args": args, "includes": includes},
                    {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}
                ]
            })
        },
    )
}

fn check_report(bytes: &[u8]) {
    let report = validate(bytes, &Options::default());
    assert!(report.digest.starts_with("sha256:"));
    let has_error = report
        .diagnostics
        .iter()
        .any(|d| d.severity == Severity::Error);
    assert_eq!(report.is_valid(), !has_error);
    for d in &report.diagnostics {
        assert!(d.path.is_empty() || d.path.starts_with('/'), "{d}");
        assert!(!d.message.is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_report(&bytes);
    }

    #[test]
    fn arbitrary_json(v in arb_json()) {
        check_report(serde_json::to_string(&v).unwrap().as_bytes());
    }

    #[test]
    fn profile_shaped_documents(v in arb_profile_shaped()) {
        check_report(serde_json::to_string_pretty(&v).unwrap().as_bytes());
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let deep = format!(
        "{{\"defaultAction\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let report = validate(deep.as_bytes(), &Options { max_bytes: 1 << 20 });
    assert!(!report.is_valid());
}
