#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect
//! Hostile desired sets, generated: paths with `..`, `.`, empty and over-long components,
//! symlinks on the way and as targets, absolute paths outside the allowed root, names that
//! are not `*.json`, set-id, sticky, execute, other-write and out-of-range modes, content
//! that is no profile, wrong digests, unknown owners, duplicates, and directories and files
//! at the same paths, applied one after another by the real `Applier` on a fake node, with
//! and without `--adopt-existing`. Whatever the sets, the agent never panics, never changes
//! anything outside `<host-root>/<allowed-root>`, never leaves anything inside it that the
//! policy forbids, never touches a foreign file (unless it may take it over), and a set it
//! refuses before writing changes nothing at all.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use common::{Node, ROOT, profile_text};
use proptest::prelude::*;
use seccomp_node_agent::{DesiredFile, DesiredKind, ErrorCode};

/// The foreign file's bytes (a valid profile, so a set may ask for exactly these and adopt it).
fn foreign_text() -> String {
    profile_text("foreign")
}

/// What the fake node holds before the first set: symlinks out of the allowed root, a file
/// someone else placed, and the precious file the links point to.
struct Setup {
    node: Node,
    /// The symlinks under the allowed root, with their targets.
    links: BTreeMap<PathBuf, PathBuf>,
    foreign: PathBuf,
}

fn setup() -> Setup {
    let node = Node::new();
    let outside = node.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("target.json"), "precious").unwrap();
    let root = node.path(ROOT);
    symlink(&outside, root.join("link")).unwrap();
    symlink(outside.join("target.json"), root.join("file-link.json")).unwrap();
    symlink("../../../../etc", root.join("etc-link")).unwrap();
    let foreign = root.join("foreign.json");
    std::fs::write(&foreign, foreign_text()).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o644)).unwrap();
    let links = ["link", "file-link.json", "etc-link"]
        .into_iter()
        .map(|link| {
            let path = root.join(link);
            let target = std::fs::read_link(&path).unwrap();
            (path, target)
        })
        .collect();
    Setup {
        node,
        links,
        foreign,
    }
}

/// Path components, mostly hostile.
fn component() -> BoxedStrategy<String> {
    proptest::sample::select(vec![
        "..",
        ".",
        "",
        "link",
        "file-link.json",
        "etc-link",
        "passwd",
        "a.json",
        "team",
        "foreign.json",
        "a\0.json",
    ])
    .prop_map(str::to_owned)
    .boxed()
}

/// `prefix` and `comps` joined with `/`, and a trailing `/` if `slash`.
fn join(prefix: &str, comps: &[String], slash: bool) -> String {
    let mut path = prefix.to_owned();
    for comp in comps {
        path.push('/');
        path.push_str(comp);
    }
    if slash {
        path.push('/');
    }
    path
}

/// A good path for a file or a directory (`is_dir`), or, when `hostile`, a path anywhere, or
/// one in a good place with a bad name.
fn path(hostile: bool, is_dir: bool) -> BoxedStrategy<String> {
    let dirs = proptest::collection::vec(
        proptest::sample::select(vec!["team", "sub"]).prop_map(str::to_owned),
        0..2,
    );
    if !hostile {
        let name = if is_dir {
            Just(None).boxed()
        } else {
            proptest::sample::select(vec!["a.json", "b.json", "foreign.json"])
                .prop_map(|name| Some(name.to_owned()))
                .boxed()
        };
        return (dirs, name)
            .prop_map(|(mut comps, name)| {
                comps.extend(name);
                join(ROOT, &comps, false)
            })
            .boxed();
    }
    let prefix = prop_oneof![
        4 => Just(ROOT),
        1 => proptest::sample::select(vec![
            "", "/", "/etc", "/var/lib/kubelet", "/var/lib/kubelet/seccompx", "relative",
            "/var/lib/kubelet/seccomp/..",
        ]),
    ];
    let anywhere = (
        prefix,
        proptest::collection::vec(component(), 0..4),
        any::<bool>(),
    )
        .prop_map(|(prefix, comps, slash)| join(prefix, &comps, slash));
    let names = vec![
        "run.sh".to_owned(),
        "a.json.bak".to_owned(),
        ".json".to_owned(),
        "a.JSON".to_owned(),
        "passwd".to_owned(),
        "link".to_owned(),
        "file-link.json".to_owned(),
        "etc-link".to_owned(),
        ".seccomp-agent.a.json.tmp.1".to_owned(),
        "x".repeat(256),
        format!("{}.json", "x".repeat(250)),
    ];
    let badly_named = (dirs, proptest::sample::select(names)).prop_map(|(mut comps, name)| {
        comps.push(name);
        join(ROOT, &comps, false)
    });
    let places = vec![
        "/",
        "/etc",
        "/etc/cron.d",
        "/var/lib/kubelet",
        "/var/lib/kubelet/seccompx",
        "/var/lib/kubelet/seccomp/link",
        "/var/lib/kubelet/seccomp/etc-link",
        "/var/lib/kubelet/seccomp/../seccompx",
        "/var/lib/kubelet/seccomp/foreign.json",
        "var/lib/kubelet/seccomp",
    ];
    let name = if is_dir {
        proptest::sample::select(vec!["", "team"]).boxed()
    } else {
        proptest::sample::select(vec!["a.json", "passwd"]).boxed()
    };
    let elsewhere = (proptest::sample::select(places), name).prop_map(|(place, name)| {
        let name = (!name.is_empty()).then(|| name.to_owned());
        join(place.trim_end_matches('/'), &Vec::from_iter(name), false)
    });
    prop_oneof![anywhere, badly_named, elsewhere].boxed()
}

/// A mode the policy allows for a file or a directory (`is_dir`), or, when `hostile`, one it
/// may not.
fn mode(hostile: bool, is_dir: bool) -> BoxedStrategy<u32> {
    match (hostile, is_dir) {
        (false, true) => proptest::sample::select(vec![0o755, 0o750, 0o700, 0o644, 0o711]).boxed(),
        (false, false) => proptest::sample::select(vec![0o644, 0o640, 0o600, 0o664, 0o444]).boxed(),
        (true, _) => prop_oneof![
            3 => proptest::sample::select(vec![
                0o4755, 0o4644, 0o2644, 0o1644, 0o1777, 0o777, 0o666, 0o646, 0o744, 0o10644,
            ]),
            1 => any::<u32>(),
        ]
        .boxed(),
    }
}

/// A valid profile (sometimes the foreign file's bytes), or, when `hostile`, something else.
fn content(hostile: bool) -> BoxedStrategy<Vec<u8>> {
    if !hostile {
        return prop_oneof![
            3 => proptest::sample::select(vec!["a", "b"]).prop_map(|tag| profile_text(tag).into_bytes()),
            1 => Just(foreign_text().into_bytes()),
        ]
        .boxed();
    }
    prop_oneof![
        1 => proptest::sample::select(vec!["", "{}", "#!/bin/sh\nid\n", "root::0:0::/:/bin/sh\n"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

/// One of `good`, or, when `hostile`, a name the host does not know.
fn account(hostile: bool, good: Vec<&'static str>) -> BoxedStrategy<&'static str> {
    if hostile {
        proptest::sample::select(vec!["nobody", "", "-1", "root\n"]).boxed()
    } else {
        proptest::sample::select(good).boxed()
    }
}

/// Which aspects of an entry are hostile.
#[derive(Debug, Clone, Copy, Default)]
struct Hostile {
    path: bool,
    mode: bool,
    content: bool,
    owner: bool,
    group: bool,
    /// A file's digest that does not match, or a directory with content.
    twist: bool,
}

/// Mostly one hostile aspect, so that the others do not get the entry refused anyway.
fn hostility() -> impl Strategy<Value = Hostile> {
    let dims = prop_oneof![3 => Just(1..=1), 1 => Just(1..=2)]
        .prop_flat_map(|count| proptest::sample::subsequence(vec![0, 1, 2, 3, 4, 5], count));
    dims.prop_map(|dims| Hostile {
        path: dims.contains(&0),
        mode: dims.contains(&1),
        content: dims.contains(&2),
        owner: dims.contains(&3),
        group: dims.contains(&4),
        twist: dims.contains(&5),
    })
}

/// An entry that is good but in the aspects `hostile` names.
fn entry(hostile: Hostile) -> BoxedStrategy<DesiredFile> {
    let kinds = prop_oneof![3 => Just(false), 1 => Just(true)];
    let placed = kinds.prop_flat_map(move |is_dir| {
        (
            Just(is_dir),
            path(hostile.path, is_dir),
            mode(hostile.mode, is_dir),
        )
    });
    (
        placed,
        content(hostile.content),
        account(hostile.owner, vec!["root", "0", "seccompuser", "4242"]),
        account(hostile.group, vec!["root", "0", "seccompgroup", "4343"]),
    )
        .prop_map(move |((is_dir, path, mode), content, owner, group)| {
            if is_dir {
                let mut d = DesiredFile::directory(path, mode, owner, group);
                if hostile.twist {
                    d.content = content;
                }
                d
            } else {
                let mut d = DesiredFile::file(path, content, mode, owner, group);
                if hostile.twist {
                    d.sha256 = "00".repeat(32);
                }
                d
            }
        })
        .boxed()
}

/// A set of good entries (which may still clash: duplicates, a file where a directory is
/// desired, the foreign file with other bytes) and, half the time, hostile ones among them.
fn set() -> impl Strategy<Value = Vec<DesiredFile>> {
    (
        proptest::collection::vec(entry(Hostile::default()), 0..4),
        prop_oneof![
            1 => Just(Vec::new()).boxed(),
            1 => proptest::collection::vec(hostility().prop_flat_map(entry), 1..3).boxed(),
        ],
        any::<u64>(),
    )
        .prop_map(|(mut good, hostile, seed)| {
            for (i, entry) in hostile.into_iter().enumerate() {
                let at = usize::try_from(seed.rotate_left(8 * i as u32) % (good.len() as u64 + 1))
                    .unwrap();
                good.insert(at, entry);
            }
            good
        })
}

/// Every file, directory and symlink under `dir` (not following symlinks), `dir` included.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if std::fs::symlink_metadata(&path).unwrap().is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Whatever the agent left under the allowed root is allowed there; the foreign file, when it
/// is still someone else's (`foreign` holds its bytes then), is untouched.
fn check_allowed_root(setup: &Setup, foreign: Option<&[u8]>) -> Result<(), TestCaseError> {
    let mut paths = Vec::new();
    walk(&setup.node.path(ROOT), &mut paths);
    if let Some(bytes) = foreign {
        prop_assert_eq!(
            &std::fs::read(&setup.foreign).unwrap()[..],
            bytes,
            "the foreign file was overwritten"
        );
    }
    for path in paths {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.mode() & 0o7777;
        if let Some(target) = setup.links.get(&path) {
            prop_assert_eq!(&std::fs::read_link(&path).unwrap(), target);
            continue;
        }
        if path == setup.node.path(ROOT) {
            prop_assert_eq!(mode, 0o755, "the existing allowed root is left as it is");
            continue;
        }
        // Everything else, including the foreign file whatever became of it, obeys the policy.
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if meta.is_dir() {
            prop_assert_eq!(mode & 0o7002, 0, "directory {:?} has mode {:o}", path, mode);
        } else {
            prop_assert!(
                meta.is_file(),
                "{:?} is neither a file nor a directory",
                path
            );
            prop_assert!(
                name.len() > 5 && name.ends_with(".json"),
                "file {:?} is not *.json",
                path
            );
            prop_assert_eq!(mode & 0o7113, 0, "file {:?} has mode {:o}", path, mode);
            let report = seccomp_profile::validate_default(&std::fs::read(&path).unwrap());
            prop_assert!(report.is_valid(), "file {:?} is not a valid profile", path);
        }
    }
    Ok(())
}

/// Whether a refusal with `code` came before anything was written: here, where nothing else
/// changes the disk meanwhile, only an I/O error can come from a write.
fn refused_before_writing(code: ErrorCode) -> bool {
    !matches!(code, ErrorCode::Io)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_sets_never_write_outside_the_allowed_root_nor_anything_it_forbids(
        sets in proptest::collection::vec(set(), 1..4),
        adopt_existing in any::<bool>(),
    ) {
        let setup = setup();
        let node = &setup.node;
        let outside = node.snapshot_outside();
        let mut applier = node.applier().with_adopt_existing(adopt_existing);
        // The foreign file's bytes while it is someone else's: always, unless the agent may
        // take it over; until a set that asks for exactly these bytes is applied (then the
        // agent adopted it and may update it), and again once one without it is.
        let mut foreign = (!adopt_existing).then(|| foreign_text().into_bytes());
        for (i, set) in sets.iter().enumerate() {
            let before = node.snapshot();
            let result = applier.apply(&format!("r{i}"), set);
            if let Err(rejected) = &result {
                prop_assert!(!rejected.errors.is_empty());
                if rejected.errors.iter().all(|e| refused_before_writing(e.code)) {
                    prop_assert_eq!(node.snapshot(), before, "a refused set changed something");
                }
            }
            prop_assert_eq!(node.snapshot_outside(), outside.clone(), "something outside the allowed root changed");
            check_allowed_root(&setup, foreign.as_deref())?;
            prop_assert!(node.temp_leftovers().is_empty(), "{:?}", node.temp_leftovers());
            if result.is_ok() && !adopt_existing {
                let desired = set.iter().any(|d| {
                    d.kind == DesiredKind::File && node.path(&d.path) == setup.foreign
                });
                foreign = (!desired).then(|| std::fs::read(&setup.foreign).unwrap());
            }
        }
        // Drift repair of whatever was accepted stays inside too.
        let _ = applier.repair();
        prop_assert_eq!(node.snapshot_outside(), outside, "a repair changed something outside");
        check_allowed_root(&setup, foreign.as_deref())?;
    }
}
