//! Effective file sets: worked examples, and properties over generated fleets (the result
//! does not depend on NCI order; an NCI matching no node changes nothing; a higher priority
//! always wins its path; equal priorities go to the name that sorts last).

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::BTreeMap;

use proptest::prelude::*;
use seccomp_rollout::fileset::{Fleet, effective_set};
use seccomp_rollout::nci::{self, FileType, NodeConfigItem, ProfileRef, Target};
use seccomp_rollout::selector::{self, Labels};

fn labels(s: &str) -> Labels {
    selector::parse(s).unwrap()
}

fn nci(
    name: &str,
    profile: &str,
    content: &str,
    sel: &str,
    priority: i32,
    path: Option<&str>,
) -> NodeConfigItem {
    let mut t = Target::new(selector::parse(sel).unwrap());
    t.priority = priority;
    t.path = path.map(str::to_owned);
    nci::render(
        ProfileRef {
            name: profile,
            version: 1,
            content: content.as_bytes(),
        },
        &t,
        Some(name),
        None,
    )
    .unwrap()
}

#[test]
fn selection_priority_and_conflicts() {
    let base = nci(
        "base",
        "web",
        "{\"defaultAction\":\"SCMP_ACT_LOG\"}",
        "kubernetes.io/os=linux",
        100,
        None,
    );
    let strict = nci(
        "strict",
        "web",
        "{\"defaultAction\":\"SCMP_ACT_ERRNO\"}",
        "pool=secure",
        200,
        None,
    );
    let other = nci(
        "other",
        "db",
        "{\"defaultAction\":\"SCMP_ACT_LOG\"}",
        "zone=",
        100,
        None,
    );
    let all = [base.clone(), strict.clone(), other.clone()];

    let plain = effective_set(&all, &labels("kubernetes.io/os=linux,pool=general")).unwrap();
    let paths: Vec<&str> = plain.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/var/lib/kubelet/seccomp",
            "/var/lib/kubelet/seccomp/web.json"
        ]
    );
    assert_eq!(plain.files[1].source, "base");
    assert!(plain.conflicts.is_empty());
    assert_eq!(plain.matched, ["base"]);

    let secure = effective_set(&all, &labels("kubernetes.io/os=linux,pool=secure,zone=a")).unwrap();
    let web = secure
        .files
        .iter()
        .find(|f| f.path.ends_with("web.json"))
        .unwrap();
    assert_eq!(web.source, "strict", "priority 200 beats 100");
    assert_eq!(
        web.content.as_deref(),
        Some("{\"defaultAction\":\"SCMP_ACT_ERRNO\"}")
    );
    assert!(
        secure.files.iter().any(|f| f.path.ends_with("db.json")),
        "zone= means the key exists"
    );
    assert_eq!(
        secure.conflicts.len(),
        1,
        "the shared directory entry is no conflict: {:?}",
        secure.conflicts
    );
    assert_eq!(secure.conflicts[0].loser, "base");
    assert_eq!(secure.conflicts[0].winner, "strict");
    assert_ne!(plain.revision, secure.revision);

    // Equal priority: the name that sorts last wins.
    let a = nci(
        "a-first",
        "web",
        "{\"defaultAction\":\"SCMP_ACT_KILL\"}",
        "kubernetes.io/os=linux",
        100,
        None,
    );
    let set = effective_set(&[base.clone(), a], &labels("kubernetes.io/os=linux")).unwrap();
    assert_eq!(set.files[1].source, "base");
    assert_eq!(set.conflicts[0].loser, "a-first");

    // No match, no files; the empty set still has a revision.
    let none = effective_set(&all, &labels("kubernetes.io/os=windows")).unwrap();
    assert!(none.files.is_empty());
    assert!(none.revision.starts_with("sha256:"));

    // Directory entries are normalised and typed.
    assert_eq!(plain.files[0].kind, FileType::Directory);
    assert_eq!(plain.files[1].mode, 0o644);
}

#[test]
fn many_nodes_share_computed_sets() {
    let all = [
        nci("base", "web", "{}", "kubernetes.io/os=linux", 100, None),
        nci("zoned", "db", "{}", "zone=a", 100, None),
    ];
    let fleet = Fleet::new(&all).unwrap();
    let nodes: Vec<(String, Labels)> = (0..20)
        .map(|i| {
            (
                format!("n{i}"),
                labels(&format!(
                    "kubernetes.io/os=linux,zone={},kubernetes.io/hostname=n{i}",
                    if i % 2 == 0 { "a" } else { "b" }
                )),
            )
        })
        .collect();
    let sets = fleet.effective_all(nodes.iter().map(|(n, l)| (n.as_str(), l)));
    assert_eq!(sets.len(), 20);
    assert!(std::sync::Arc::ptr_eq(&sets["n0"], &sets["n2"]));
    assert!(!std::sync::Arc::ptr_eq(&sets["n0"], &sets["n1"]));
    assert_eq!(*sets["n0"], fleet.effective(&nodes[0].1));
}

#[test]
fn bad_ncis_are_refused() {
    let mut n = nci("x", "web", "{}", "a=b", 1, None);
    n.spec.files[1].mode = "rwx".into();
    assert!(Fleet::new(&[n]).unwrap_err().to_string().contains("mode"));
    let mut n = nci("x", "web", "{}", "a=b", 1, None);
    n.spec.files[1].content = None;
    assert!(
        Fleet::new(&[n])
            .unwrap_err()
            .to_string()
            .contains("no content")
    );
}

// ---- properties ----

const KEYS: [&str; 3] = ["zone", "pool", "os"];
const VALUES: [&str; 3] = ["a", "b", ""];

fn arb_selector() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(
        proptest::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        proptest::sample::select(VALUES.to_vec()).prop_map(str::to_owned),
        0..3,
    )
}

fn arb_labels() -> impl Strategy<Value = Labels> {
    proptest::collection::btree_map(
        proptest::sample::select(KEYS.to_vec()).prop_map(str::to_owned),
        proptest::sample::select(vec!["a", "b"]).prop_map(str::to_owned),
        0..4,
    )
}

fn arb_nci(i: usize) -> impl Strategy<Value = NodeConfigItem> {
    (arb_selector(), 0..4i32, 0..3usize, 0..3usize).prop_map(
        move |(sel, priority, profile, content)| {
            let mut t = Target::new(sel);
            t.priority = priority;
            let profile = format!("p{profile}");
            let content = format!("{{\"v\":{content}}}");
            nci::render(
                ProfileRef {
                    name: &profile,
                    version: 1,
                    content: content.as_bytes(),
                },
                &t,
                Some(&format!("nci-{i}")),
                None,
            )
            .unwrap()
        },
    )
}

fn arb_ncis() -> impl Strategy<Value = Vec<NodeConfigItem>> {
    (0..8usize).prop_flat_map(|n| (0..n).map(arb_nci).collect::<Vec<_>>())
}

proptest! {
    #[test]
    fn order_of_ncis_does_not_matter(ncis in arb_ncis(), node in arb_labels(), seed in any::<u64>()) {
        let mut shuffled = ncis.clone();
        // A deterministic shuffle from the seed.
        let len = shuffled.len();
        for i in (1..len).rev() {
            let j = (seed.wrapping_mul(6364136223846793005).wrapping_add(i as u64) % (i as u64 + 1)) as usize;
            shuffled.swap(i, j);
        }
        prop_assert_eq!(effective_set(&ncis, &node).unwrap(), effective_set(&shuffled, &node).unwrap());
    }

    #[test]
    fn an_nci_matching_no_node_changes_nothing(ncis in arb_ncis(), nodes in proptest::collection::vec(arb_labels(), 1..6)) {
        let mut more = ncis.clone();
        let mut t = Target::new(selector::parse("nowhere=true").unwrap());
        t.priority = 1000;
        more.push(nci::render(ProfileRef { name: "p0", version: 9, content: b"{}" }, &t, Some("zzz-unmatched"), None).unwrap());
        for node in &nodes {
            prop_assert_eq!(effective_set(&ncis, node).unwrap(), effective_set(&more, node).unwrap());
        }
    }

    #[test]
    fn the_highest_priority_wins_its_path(ncis in arb_ncis(), node in arb_labels()) {
        let set = effective_set(&ncis, &node).unwrap();
        for f in &set.files {
            let winner = ncis.iter().find(|n| n.metadata.name == f.source).unwrap();
            for other in &ncis {
                let writes_path = other.spec.files.iter().any(|x| x.path.trim_end_matches('/') == f.path);
                if writes_path && selector::matches(&other.spec.nodeconfigselector, &node) {
                    let (wp, op) = (winner.spec.priority, other.spec.priority);
                    prop_assert!(wp > op || (wp == op && winner.metadata.name >= other.metadata.name),
                        "{} ({wp}) won {} over {} ({op})", winner.metadata.name, f.path, other.metadata.name);
                }
            }
        }
        // Every matched NCI is really matched, and the revision is a function of the files.
        for name in &set.matched {
            let n = ncis.iter().find(|n| &n.metadata.name == name).unwrap();
            prop_assert!(selector::matches(&n.spec.nodeconfigselector, &node));
        }
        prop_assert_eq!(&set.revision, &seccomp_rollout::fileset::revision(&set.files));
    }

    #[test]
    fn the_index_agrees_with_a_plain_scan(ncis in arb_ncis(), node in arb_labels()) {
        let fleet = Fleet::new(&ncis).unwrap();
        let expected: Vec<u32> = ncis.iter().enumerate()
            .filter(|(_, n)| selector::matches(&n.spec.nodeconfigselector, &node))
            .map(|(i, _)| i as u32)
            .collect();
        prop_assert_eq!(fleet.matching("n", &node), expected);
    }
}
