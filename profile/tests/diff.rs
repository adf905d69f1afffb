//! The semantic diff: a worked example, and properties over generated profiles.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use proptest::prelude::*;
use seccomp_profile::{Action, Arg, Filter, Profile, Rule, diff, validate_default};

fn parse(s: &str) -> Profile {
    let r = validate_default(s.as_bytes());
    r.profile
        .unwrap_or_else(|| panic!("invalid: {:?}", r.diagnostics))
}

#[test]
fn worked_example() {
    let old = parse(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["read","write","ptrace"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    // Same behaviour, different text: reordered names, split rules, whitespace.
    let same = parse(
        r#"{ "syscalls": [ {"action":"SCMP_ACT_ALLOW","names":["write"]},
                           {"action":"SCMP_ACT_ALLOW","names":["ptrace","read"]} ],
             "architectures": ["SCMP_ARCH_X86_64"], "defaultAction": "SCMP_ACT_ERRNO" }"#,
    );
    assert!(diff(&old, &same).is_empty(), "{:?}", diff(&old, &same));

    let new = parse(
        r#"{"defaultAction":"SCMP_ACT_KILL_PROCESS","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
            "flags":["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls":[{"names":["read","write","openat"],"action":"SCMP_ACT_ALLOW"},
                        {"names":["ptrace"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    );
    let d = diff(&old, &new);
    let change = d.default_action.as_ref().expect("default changed");
    assert_eq!(
        (change.before.as_str(), change.after.as_str()),
        ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL_PROCESS")
    );
    assert_eq!(d.architectures_added, vec!["SCMP_ARCH_X86"]);
    assert!(d.architectures_removed.is_empty());
    assert_eq!(d.flags_added, vec!["SECCOMP_FILTER_FLAG_LOG"]);
    let added: Vec<&str> = d.added().map(|c| c.name.as_str()).collect();
    assert_eq!(added, vec!["openat"]);
    assert_eq!(d.removed().count(), 0);
    let changed: Vec<_> = d.changed().collect();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].name, "ptrace");
    assert_eq!(changed[0].before.as_deref(), Some("SCMP_ACT_ALLOW"));
    assert_eq!(changed[0].after.as_deref(), Some("SCMP_ACT_ERRNO(1)"));
}

#[test]
fn conditions_are_described() {
    let old = parse(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    let new = parse(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    let d = diff(&old, &new);
    assert_eq!(d.syscalls.len(), 1);
    assert_eq!(
        d.syscalls[0].before.as_deref(),
        Some("SCMP_ACT_ALLOW if arg0 == 0x0")
    );
    assert_eq!(
        d.syscalls[0].after.as_deref(),
        Some("SCMP_ACT_ALLOW if arg0 == 0x8")
    );
}

const NAMES: [&str; 8] = [
    "read", "write", "openat", "mount", "ptrace", "kill", "socket", "ioctl",
];
const ACTS: [&str; 4] = [
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_LOG",
    "SCMP_ACT_KILL",
];
const ARCHES: [&str; 4] = [
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
];

fn action() -> impl Strategy<Value = Action> {
    (0..ACTS.len(), proptest::option::of(0u64..4)).prop_map(|(i, ret)| Action {
        name: ACTS[i].to_owned(),
        ret: if ACTS[i] == "SCMP_ACT_ERRNO" {
            ret
        } else {
            None
        },
    })
}

fn rule() -> impl Strategy<Value = Rule> {
    (
        proptest::sample::subsequence(NAMES.to_vec(), 1..4),
        action(),
        proptest::collection::vec((0u64..6, 0u64..3), 0..2),
    )
        .prop_map(|(names, action, args)| Rule {
            names: names.into_iter().map(Into::into).collect(),
            action,
            args: args
                .into_iter()
                .map(|(index, value)| Arg {
                    index,
                    value,
                    value_two: 0,
                    op: "SCMP_CMP_EQ".to_owned(),
                })
                .collect(),
            includes: Filter::default(),
            excludes: Filter::default(),
        })
}

fn profile() -> impl Strategy<Value = Profile> {
    (
        action(),
        proptest::sample::subsequence(ARCHES.to_vec(), 0..3),
        proptest::collection::vec(rule(), 0..6),
    )
        .prop_map(|(default_action, arches, rules)| Profile {
            default_action,
            architectures: arches.into_iter().map(str::to_owned).collect(),
            flags: Vec::new(),
            listener_path: None,
            rules,
        })
}

proptest! {
    #[test]
    fn diff_with_itself_is_empty(p in profile()) {
        prop_assert!(diff(&p, &p).is_empty());
    }

    #[test]
    fn swapping_sides_swaps_added_and_removed(a in profile(), b in profile()) {
        let ab = diff(&a, &b);
        let ba = diff(&b, &a);
        let names = |it: &mut dyn Iterator<Item = &seccomp_profile::SyscallChange>| {
            it.map(|c| c.name.clone()).collect::<Vec<_>>()
        };
        prop_assert_eq!(names(&mut ab.added()), names(&mut ba.removed()));
        prop_assert_eq!(names(&mut ab.removed()), names(&mut ba.added()));
        prop_assert_eq!(&ab.architectures_added, &ba.architectures_removed);
        prop_assert_eq!(&ab.flags_added, &ba.flags_removed);
        for (x, y) in ab.changed().zip(ba.changed()) {
            prop_assert_eq!(&x.name, &y.name);
            prop_assert_eq!(&x.before, &y.after);
            prop_assert_eq!(&x.after, &y.before);
        }
        prop_assert_eq!(ab.is_empty(), ba.is_empty());
    }

    #[test]
    fn rule_order_of_distinct_syscalls_does_not_matter(p in profile()) {
        // Reversing the names inside each rule never changes behaviour.
        let mut q = p.clone();
        for r in &mut q.rules {
            r.names.reverse();
        }
        prop_assert!(diff(&p, &q).is_empty());
    }
}
