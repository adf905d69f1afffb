//! Compatibility rules on publish: each mode accepts and refuses the right versions, names
//! what breaks it, and changing the rule is audited.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use seccomp_registry::service::{Actor, Publish};
use seccomp_registry::{Error, Limits, NoUsageTracking, ProfileStore, Registry};

fn profile(default: &str, allow: &[&str], deny: &[&str]) -> Vec<u8> {
    let names = |l: &[&str]| {
        l.iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut rules = format!(
        "{{\"names\": [{}], \"action\": \"SCMP_ACT_ALLOW\"}}",
        names(allow)
    );
    if !deny.is_empty() {
        rules.push_str(&format!(
            ",{{\"names\": [{}], \"action\": \"SCMP_ACT_ERRNO\"}}",
            names(deny)
        ));
    }
    let errno = if default == "SCMP_ACT_ERRNO" {
        ", \"defaultErrnoRet\": 1"
    } else {
        ""
    };
    format!(
        "{{\"defaultAction\": \"{default}\"{errno}, \"architectures\": [\"SCMP_ARCH_X86_64\"], \"syscalls\": [{rules}]}}\n"
    )
    .into_bytes()
}

fn publish(content: Vec<u8>) -> Publish {
    Publish {
        name: "web".into(),
        content,
        description: String::new(),
        expected_latest: None,
    }
}

fn registry(dir: &std::path::Path) -> Registry {
    Registry::new(
        ProfileStore::open(dir).unwrap(),
        Limits {
            max_profile_bytes: 1 << 20,
        },
        Arc::new(NoUsageTracking),
    )
}

#[tokio::test]
async fn each_mode_refuses_what_breaks_it_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = registry(dir.path());
    let admin = Actor("alice".into());
    let complain = profile("SCMP_ACT_LOG", &["read", "write"], &["ptrace"]);
    r.publish(&admin, publish(complain.clone())).await.unwrap();

    assert_eq!(
        r.set_policy(&admin, "web", "no-new-denies").await.unwrap(),
        "none"
    );
    // Enforcing stops every call no rule names, and denying `read` stops read.
    let enforced = profile("SCMP_ACT_ERRNO", &["read", "write"], &["ptrace"]);
    let e = r
        .publish(&admin, publish(enforced.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Incompatible { .. }), "{e}");
    assert_eq!(e.category().as_str(), "FAILED_PRECONDITION");
    let text = e.to_string();
    assert!(
        text.contains("(default) on SCMP_ARCH_X86_64: allowed → denied"),
        "{text}"
    );
    let e = r
        .publish(
            &admin,
            publish(profile("SCMP_ACT_LOG", &["write"], &["ptrace", "read"])),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("read on SCMP_ARCH_X86_64"), "{e}");
    // Loosening is the safe direction: accepted (version 2).
    let loosened = profile("SCMP_ACT_LOG", &["read", "write", "ptrace"], &[]);
    assert_eq!(
        r.publish(&admin, publish(loosened))
            .await
            .unwrap()
            .meta
            .version,
        2
    );

    // tighten-only: the reverse.
    assert_eq!(
        r.set_policy(&admin, "web", "tighten-only").await.unwrap(),
        "no-new-denies"
    );
    // Enforcing tightens: accepted (version 3); then allowing `mount`, stopped by the
    // enforced default, loosens: refused.
    assert_eq!(
        r.publish(&admin, publish(enforced))
            .await
            .unwrap()
            .meta
            .version,
        3
    );
    let e = r
        .publish(
            &admin,
            publish(profile(
                "SCMP_ACT_ERRNO",
                &["read", "write", "mount"],
                &["ptrace"],
            )),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("tighten-only"), "{e}");
    assert!(
        e.to_string()
            .contains("mount on SCMP_ARCH_X86_64: denied → allowed"),
        "{e}"
    );

    // none: anything.
    r.set_policy(&admin, "web", "none").await.unwrap();
    r.publish(&admin, publish(complain)).await.unwrap();

    // Each change of the rule is in the audit log with who made it.
    let audit = r.audit(None, 0, "").unwrap().items;
    let changes: Vec<&str> = audit
        .iter()
        .filter(|e| e.method == "SetPolicy" && e.result == "OK")
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        changes,
        [
            "compatibility none → no-new-denies",
            "compatibility no-new-denies → tighten-only",
            "compatibility tighten-only → none"
        ]
    );
    assert!(
        audit
            .iter()
            .all(|e| e.method != "SetPolicy" || e.actor == "alice")
    );
}

#[tokio::test]
async fn the_rule_survives_a_restart_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let admin = Actor("alice".into());
    {
        let r = registry(dir.path());
        r.publish(&admin, publish(profile("SCMP_ACT_LOG", &["read"], &[])))
            .await
            .unwrap();
        r.set_policy(&admin, "web", "no-new-denies").await.unwrap();
        let e = r.set_policy(&admin, "web", "strict").await.unwrap_err();
        assert_eq!(e.category().as_str(), "INVALID_ARGUMENT");
        let e = r.set_policy(&admin, "nope", "none").await.unwrap_err();
        assert_eq!(e.category().as_str(), "NOT_FOUND");
    }
    let r = registry(dir.path());
    let e = r
        .publish(&admin, publish(profile("SCMP_ACT_ERRNO", &["read"], &[])))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Incompatible { .. }), "{e}");
}
