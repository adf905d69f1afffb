#![allow(clippy::unwrap_used)]
//! Applying desired sets to a fake node: what lands, what is refused (and then nothing is
//! written), what is left alone, what is removed, and what survives a restart.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

use common::{
    Node, PASSWD, ROOT, SECCOMP_ID, applied, assert_refused, file, machine_name, profile,
    profile_text, stat_cli,
};
use seccomp_node_agent::{Applied, DesiredFile, ErrorCode, ObservedKind, PausePoint, WriteHook};

const WEB: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#;

#[test]
fn file_lands_with_content_mode_owner_and_group() {
    let node = Node::new();
    let mut applier = node.applier();
    let desired = vec![file("web.json", WEB, 0o640, "seccompuser", "seccompgroup")];
    let applied = applied(applier.apply("r1", &desired));

    let on_disk = node.path(&desired[0].path);
    assert_eq!(std::fs::read(&on_disk).unwrap(), WEB.as_bytes());
    let meta = std::fs::symlink_metadata(&on_disk).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (SECCOMP_ID, SECCOMP_ID));
    // stat names ids from this machine's own files; the ids are what matter.
    let expected = format!(
        "640 {} {}",
        machine_name("/etc/passwd", SECCOMP_ID),
        machine_name("/etc/group", SECCOMP_ID)
    );
    assert_eq!(stat_cli(&on_disk), expected);

    // The report is what is on disk, with names from the host root's files.
    assert_eq!(applied.revision, "r1");
    assert_eq!(applied.written, vec![desired[0].path.clone()]);
    let observed = &applied.observed[0];
    assert_eq!(observed.path, desired[0].path);
    assert!(observed.exists);
    assert_eq!(observed.kind, Some(ObservedKind::File));
    assert_eq!(observed.sha256, desired[0].sha256);
    assert_eq!(observed.size, WEB.len() as u64);
    assert_eq!(
        (observed.mode, observed.uid, observed.gid),
        (0o640, SECCOMP_ID, SECCOMP_ID)
    );
    assert_eq!(
        (observed.owner.as_str(), observed.group.as_str()),
        ("seccompuser", "seccompgroup")
    );
    assert_eq!(applier.revision(), "r1");
    assert!(
        node.temp_leftovers().is_empty(),
        "{:?}",
        node.temp_leftovers()
    );
}

#[test]
fn root_owned_default_profile_lands() {
    let node = Node::new();
    let mut applier = node.applier();
    let desired = vec![profile("web.json", WEB)];
    applied(applier.apply("r1", &desired));
    let on_disk = node.path(&desired[0].path);
    assert_eq!(stat_cli(&on_disk), "644 root root");
    assert_eq!(std::fs::read(&on_disk).unwrap(), WEB.as_bytes());
}

#[test]
fn numeric_ids_are_accepted() {
    let node = Node::new();
    let mut applier = node.applier();
    let desired = vec![file("web.json", WEB, 0o600, "4242", "4343")];
    let applied = applied(applier.apply("r1", &desired));
    let meta = std::fs::metadata(node.path(&desired[0].path)).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (4242, 4343, 0o600)
    );
    // No name on the host for these ids: reported empty.
    assert_eq!(
        (
            applied.observed[0].owner.as_str(),
            applied.observed[0].group.as_str()
        ),
        ("", "")
    );
}

#[test]
fn unknown_owner_or_group_is_refused_even_if_this_machine_knows_it() {
    // "nobody" and "nogroup" exist in this machine's files, not in the host root's: the agent
    // must resolve against the host, so they are unknown there.
    let node = Node::new();
    let good = profile("good.json", WEB);
    let bad_owner = file("owner.json", WEB, 0o644, "nobody", "root");
    let rejected = assert_refused(
        &node,
        &[good.clone(), bad_owner.clone()],
        &bad_owner.path,
        ErrorCode::UnknownOwner,
    );
    assert_eq!(rejected.errors.len(), 1, "{:#?}", rejected.errors);
    let bad_group = file("group.json", WEB, 0o644, "root", "nogroup");
    assert_refused(
        &node,
        &[good.clone(), bad_group.clone()],
        &bad_group.path,
        ErrorCode::UnknownGroup,
    );
    let empty = file("empty.json", WEB, 0o644, "", "root");
    assert_refused(
        &node,
        &[good, empty.clone()],
        &empty.path,
        ErrorCode::UnknownOwner,
    );
}

#[test]
fn path_traversal_is_refused_and_nothing_is_written() {
    let node = Node::new();
    let good = profile("good.json", WEB);
    let evil = DesiredFile::file(
        format!("{ROOT}/../../../../etc/evil.json"),
        WEB,
        0o644,
        "root",
        "root",
    );
    let rejected = assert_refused(
        &node,
        &[good.clone(), evil.clone()],
        &evil.path,
        ErrorCode::OutsideRoot,
    );
    // Only the bad path is an error; the good one is reported as observed (absent).
    assert_eq!(rejected.errors.len(), 1);
    assert!(
        rejected
            .observed
            .iter()
            .any(|o| o.path == good.path && !o.exists)
    );
    assert!(!node.path("/etc/evil.json").exists());
    let inner = DesiredFile::file(
        format!("{ROOT}/sub/../inner.json"),
        WEB,
        0o644,
        "root",
        "root",
    );
    assert_refused(
        &node,
        &[good, inner.clone()],
        &inner.path,
        ErrorCode::OutsideRoot,
    );
}

#[test]
fn paths_outside_the_allowed_root_or_not_normalised_are_refused() {
    let node = Node::new();
    let cases = [
        ("/etc/passwd", ErrorCode::OutsideRoot),
        (
            "/var/lib/kubelet/seccomp-other/a.json",
            ErrorCode::OutsideRoot,
        ),
        ("/var/lib/kubelet/seccomp", ErrorCode::OutsideRoot),
        ("var/lib/kubelet/seccomp/a.json", ErrorCode::InvalidPath),
        ("/var/lib/kubelet/seccomp//a.json", ErrorCode::InvalidPath),
        ("/var/lib/kubelet/seccomp/./a.json", ErrorCode::InvalidPath),
        (
            "/var/lib/kubelet/seccomp/.seccomp-agent.a.json.tmp.0",
            ErrorCode::InvalidPath,
        ),
    ];
    for (path, code) in cases {
        let bad = DesiredFile::file(path, WEB, 0o644, "root", "root");
        assert_refused(&node, &[profile("good.json", WEB), bad], path, code);
    }
    let mut bad_sha = profile("sha.json", WEB);
    bad_sha.sha256 = "00".repeat(32);
    assert_refused(
        &node,
        &[profile("good.json", WEB), bad_sha.clone()],
        &bad_sha.path,
        ErrorCode::Sha256Mismatch,
    );
    let bad_mode = file("mode.json", WEB, 0o10644, "root", "root");
    assert_refused(
        &node,
        std::slice::from_ref(&bad_mode),
        &bad_mode.path,
        ErrorCode::InvalidMode,
    );
    let twice = profile("twice.json", WEB);
    assert_refused(
        &node,
        &[twice.clone(), twice.clone()],
        &twice.path,
        ErrorCode::DuplicatePath,
    );
}

#[test]
fn symlinked_directory_in_the_path_is_refused() {
    let node = Node::new();
    let elsewhere = node.tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    symlink(&elsewhere, node.path(&format!("{ROOT}/linked"))).unwrap();
    let through = DesiredFile::file(format!("{ROOT}/linked/a.json"), WEB, 0o644, "root", "root");
    let rejected = assert_refused(
        &node,
        &[profile("good.json", WEB), through.clone()],
        &through.path,
        ErrorCode::Symlink,
    );
    assert!(
        std::fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "nothing written through the link"
    );
    // Observed, the path shows as a symlink, not as whatever the link points to.
    let observed = rejected
        .observed
        .iter()
        .find(|o| o.path == through.path)
        .unwrap();
    assert_eq!(observed.kind, Some(ObservedKind::Symlink));
}

#[test]
fn symlink_above_the_allowed_root_is_refused() {
    let node = Node::bare();
    let real = node.tmp.path().join("real-kubelet");
    std::fs::create_dir_all(real.join("seccomp")).unwrap();
    std::fs::remove_dir(node.path("/var/lib/kubelet")).unwrap();
    symlink(&real, node.path("/var/lib/kubelet")).unwrap();
    let desired = profile("a.json", WEB);
    assert_refused(
        &node,
        std::slice::from_ref(&desired),
        &desired.path,
        ErrorCode::Symlink,
    );
    assert!(!real.join("seccomp/a.json").exists());
}

#[test]
fn symlink_as_the_target_is_refused() {
    let node = Node::new();
    let outside = node.tmp.path().join("outside.json");
    std::fs::write(&outside, "precious").unwrap();
    let target = profile("a.json", WEB);
    symlink(&outside, node.path(&target.path)).unwrap();
    assert_refused(
        &node,
        &[target],
        &format!("{ROOT}/a.json"),
        ErrorCode::Symlink,
    );
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    assert!(
        std::fs::symlink_metadata(node.path(&format!("{ROOT}/a.json")))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn directory_as_the_target_is_refused() {
    let node = Node::new();
    let target = profile("a.json", WEB);
    std::fs::create_dir(node.path(&target.path)).unwrap();
    std::fs::write(node.path(&format!("{ROOT}/a.json/keep")), "x").unwrap();
    assert_refused(
        &node,
        &[profile("good.json", WEB), target.clone()],
        &target.path,
        ErrorCode::NotRegular,
    );
    assert!(node.path(&format!("{ROOT}/a.json/keep")).exists());
}

#[test]
fn fifo_as_the_target_is_refused_without_blocking() {
    let node = Node::new();
    let target = profile("fifo.json", WEB);
    let status = std::process::Command::new("mkfifo")
        .arg(node.path(&target.path))
        .status()
        .unwrap();
    assert!(status.success());
    let rejected = assert_refused(
        &node,
        std::slice::from_ref(&target),
        &target.path,
        ErrorCode::NotRegular,
    );
    assert_eq!(rejected.observed[0].kind, Some(ObservedKind::Other));
}

#[test]
fn unchanged_file_is_not_rewritten() {
    let node = Node::new();
    let mut applier = node.applier();
    let desired = vec![file("web.json", WEB, 0o640, "seccompuser", "seccompgroup")];
    applied(applier.apply("r1", &desired));
    let on_disk = node.path(&desired[0].path);
    let before = std::fs::metadata(&on_disk).unwrap();
    let snapshot = node.snapshot();

    let again = applied(applier.apply("r1", &desired));
    assert!(again.written.is_empty(), "{:?}", again.written);
    let after = std::fs::metadata(&on_disk).unwrap();
    assert_eq!(before.ino(), after.ino());
    assert_eq!(
        (before.mtime(), before.mtime_nsec()),
        (after.mtime(), after.mtime_nsec())
    );
    assert_eq!(
        (before.ctime(), before.ctime_nsec()),
        (after.ctime(), after.ctime_nsec())
    );
    assert_eq!(
        node.snapshot(),
        snapshot,
        "not even the record is rewritten"
    );

    // A restarted agent does not rewrite either.
    drop(applier);
    let mut applier = node.applier();
    assert!(applied(applier.apply("r1", &desired)).written.is_empty());
    assert_eq!(node.snapshot(), snapshot);
}

#[test]
fn a_changed_mode_or_owner_is_rewritten() {
    let node = Node::new();
    let mut applier = node.applier();
    applied(applier.apply("r1", &[profile("web.json", WEB)]));
    let changed = file("web.json", WEB, 0o600, "seccompuser", "root");
    let applied = applied(applier.apply("r2", std::slice::from_ref(&changed)));
    assert_eq!(applied.written, vec![changed.path.clone()]);
    let meta = std::fs::metadata(node.path(&changed.path)).unwrap();
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o600, SECCOMP_ID, 0)
    );
    assert_eq!(applier.revision(), "r2");
}

#[test]
fn directories_are_created_with_mode_and_owner_and_existing_ones_left_alone() {
    let node = Node::new();
    std::fs::set_permissions(node.path(ROOT), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut applier = node.applier();
    let desired = vec![
        DesiredFile::directory(format!("{ROOT}/"), 0o755, "root", "root"),
        DesiredFile::directory(format!("{ROOT}/team"), 0o750, "seccompuser", "seccompgroup"),
        DesiredFile::file(format!("{ROOT}/team/a.json"), WEB, 0o644, "root", "root"),
        // The platform's examples give directories "0644": created searchable where readable.
        DesiredFile::directory(format!("{ROOT}/plain"), 0o644, "root", "root"),
        // Not declared: created with 0755 and the agent's owner.
        DesiredFile::file(
            format!("{ROOT}/other/deep/b.json"),
            WEB,
            0o644,
            "root",
            "root",
        ),
    ];
    let applied = applied(applier.apply("r1", &desired));

    let root_meta = std::fs::metadata(node.path(ROOT)).unwrap();
    assert_eq!(
        root_meta.mode() & 0o7777,
        0o700,
        "an existing directory is left as it is"
    );
    let team = std::fs::metadata(node.path(&format!("{ROOT}/team"))).unwrap();
    assert_eq!(
        (team.mode() & 0o7777, team.uid(), team.gid()),
        (0o750, SECCOMP_ID, SECCOMP_ID)
    );
    assert_eq!(
        stat_cli(&node.path(&format!("{ROOT}/other/deep"))),
        "755 root root"
    );
    assert_eq!(
        stat_cli(&node.path(&format!("{ROOT}/plain"))),
        "755 root root",
        "0644 for a directory means 0755: read implies search"
    );
    assert_eq!(
        std::fs::read(node.path(&format!("{ROOT}/other/deep/b.json"))).unwrap(),
        WEB.as_bytes()
    );
    assert_eq!(applied.observed[0].kind, Some(ObservedKind::Directory));
    assert_eq!(applied.observed[0].mode, 0o700);
    assert!(!applied.written.contains(&desired[0].path));
    assert!(applied.written.contains(&desired[1].path));
    assert!(node.temp_leftovers().is_empty());

    // The undeclared directories were placed by the agent: gone once nothing needs them.
    applied_ok(&mut applier, &desired[..3]);
    assert!(!node.path(&format!("{ROOT}/other")).exists());
    assert!(node.path(&format!("{ROOT}/team/a.json")).exists());
}

fn applied_ok(applier: &mut seccomp_node_agent::Applier, desired: &[DesiredFile]) -> Applied {
    applied(applier.apply("rx", desired))
}

#[test]
fn a_missing_allowed_root_is_created_but_nothing_above_it() {
    let node = Node::bare();
    let mut applier = node.applier();
    let desired = vec![
        DesiredFile::directory(ROOT, 0o751, "root", "seccompgroup"),
        profile("a.json", WEB),
    ];
    applied(applier.apply("r1", &desired));
    assert_eq!(
        stat_cli(&node.path(ROOT)),
        format!("751 root {}", machine_name("/etc/group", SECCOMP_ID))
    );
    assert!(node.path(&format!("{ROOT}/a.json")).is_file());

    let node = Node::bare();
    std::fs::remove_dir(node.path("/var/lib/kubelet")).unwrap();
    let desired = profile("a.json", WEB);
    assert_refused(
        &node,
        std::slice::from_ref(&desired),
        &desired.path,
        ErrorCode::MissingParent,
    );
    assert!(!node.path("/var/lib/kubelet").exists());
}

#[test]
fn removes_only_what_it_placed() {
    let node = Node::new();
    // Someone else's file, and a file already exactly as desired before the agent came.
    std::fs::write(node.path(&format!("{ROOT}/foreign.json")), "not ours").unwrap();
    let adopted = profile("adopted.json", WEB);
    std::fs::write(node.path(&adopted.path), WEB).unwrap();
    std::fs::set_permissions(
        node.path(&adopted.path),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();

    let mut applier = node.applier();
    let a = profile("a.json", WEB);
    let b = profile("b.json", &profile_text("b"));
    let nested = DesiredFile::file(
        format!("{ROOT}/nested/c.json"),
        profile_text("c"),
        0o644,
        "root",
        "root",
    );
    let first = applied(applier.apply(
        "r1",
        &[a.clone(), b.clone(), adopted.clone(), nested.clone()],
    ));
    assert!(
        !first.written.contains(&adopted.path),
        "already as desired: not rewritten"
    );

    let second = applied(applier.apply("r2", std::slice::from_ref(&a)));
    assert!(node.path(&a.path).exists());
    assert!(!node.path(&b.path).exists());
    assert!(!node.path(&nested.path).exists());
    assert!(
        !node.path(&format!("{ROOT}/nested")).exists(),
        "its directory was the agent's too"
    );
    assert!(second.removed.contains(&b.path));
    assert!(
        node.path(&adopted.path).exists(),
        "a file the agent did not write is never removed"
    );
    assert_eq!(
        std::fs::read_to_string(node.path(&format!("{ROOT}/foreign.json"))).unwrap(),
        "not ours"
    );

    let third = applied(applier.apply("r3", &[]));
    assert_eq!(third.removed, vec![a.path.clone()]);
    assert!(node.path(&adopted.path).exists());
    assert!(node.path(&format!("{ROOT}/foreign.json")).exists());
    assert!(
        node.path(ROOT).is_dir(),
        "the allowed root was not the agent's"
    );
}

#[test]
fn a_placed_directory_holding_foreign_files_is_kept() {
    let node = Node::new();
    let mut applier = node.applier();
    let inner = DesiredFile::file(format!("{ROOT}/team/a.json"), WEB, 0o644, "root", "root");
    applied(applier.apply("r1", std::slice::from_ref(&inner)));
    std::fs::write(node.path(&format!("{ROOT}/team/theirs.json")), "x").unwrap();
    applied(applier.apply("r2", &[]));
    assert!(!node.path(&inner.path).exists());
    assert!(node.path(&format!("{ROOT}/team/theirs.json")).exists());
    // Once it is empty, the next apply removes it.
    std::fs::remove_file(node.path(&format!("{ROOT}/team/theirs.json"))).unwrap();
    let applied = applied(applier.apply("r3", &[]));
    assert_eq!(applied.removed, vec![format!("{ROOT}/team")]);
}

#[test]
fn the_record_survives_a_restart() {
    let node = Node::new();
    let a = profile("a.json", WEB);
    let b = profile("b.json", &profile_text("b"));
    {
        let mut applier = node.applier();
        applied(applier.apply("r1", &[a.clone(), b.clone()]));
    }
    let mut applier = node.applier();
    assert_eq!(applier.revision(), "r1");
    // The baseline for drift is kept without the bytes (those are in the state directory).
    let baseline: Vec<_> = applier
        .desired()
        .iter()
        .map(|d| (d.path.as_str(), d.sha256.as_str(), d.content.len()))
        .collect();
    assert_eq!(
        baseline,
        vec![
            (a.path.as_str(), a.sha256.as_str(), 0),
            (b.path.as_str(), b.sha256.as_str(), 0)
        ]
    );
    let current = applier.observe_current();
    assert_eq!(
        current.iter().map(|o| o.path.as_str()).collect::<Vec<_>>(),
        vec![a.path.as_str(), b.path.as_str()]
    );
    assert!(current.iter().all(|o| o.exists));

    let applied = applied(applier.apply("r2", std::slice::from_ref(&a)));
    assert_eq!(
        applied.removed,
        vec![b.path.clone()],
        "the new process knows it placed b"
    );
    assert!(!node.path(&b.path).exists());
}

#[test]
fn leftover_temp_files_are_cleaned_and_nothing_else() {
    let node = Node::new();
    let leftover = node.path(&format!(
        "{ROOT}/.seccomp-agent.a.json.tmp.0123456789abcdef"
    ));
    std::fs::write(&leftover, "half a prof").unwrap();
    let leftover_dir = node.path(&format!("{ROOT}/.seccomp-agent.team.tmp.0123456789abcdef"));
    std::fs::create_dir(&leftover_dir).unwrap();
    let lookalike = node.path(&format!("{ROOT}/.seccomp-agent-notes"));
    std::fs::write(&lookalike, "keep").unwrap();
    let mut applier = node.applier();
    let desired = profile("a.json", WEB);
    applied(applier.apply("r1", &[desired]));
    assert!(!leftover.exists());
    assert!(!leftover_dir.exists());
    assert!(lookalike.exists());
}

#[test]
fn leftover_temp_files_in_the_state_directory_are_cleaned_on_open() {
    let node = Node::new();
    let content = node.state.join("content");
    std::fs::create_dir_all(&content).unwrap();
    // Names written before and after the state directory shared the services' atomic write.
    let leftovers = [
        node.state
            .join(".seccomp-agent.record.json.tmp.0123456789abcdef"),
        node.state.join(".record.json.tmp.0123456789abcdef"),
        content.join(".0123.tmp.fedcba9876543210"),
    ];
    for leftover in &leftovers {
        std::fs::write(leftover, "half a record").unwrap();
    }
    let mut applier = node.applier();
    for leftover in &leftovers {
        assert!(!leftover.exists(), "{leftover:?} is left");
    }
    applied(applier.apply("r1", &[profile("a.json", WEB)]));
    drop(applier);
    assert_eq!(node.applier().revision(), "r1");
    assert_eq!(node.temp_leftovers(), Vec::<std::path::PathBuf>::new());
}

#[test]
fn the_state_directory_is_locked() {
    let node = Node::new();
    let _first = node.applier();
    match seccomp_node_agent::Applier::open(node.config()) {
        Err(seccomp_node_agent::Error::Locked(path)) => assert_eq!(path, node.state),
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[test]
fn the_host_passwd_is_read_without_following_symlinks() {
    let node = Node::new();
    let fake = node.tmp.path().join("fake-passwd");
    std::fs::write(&fake, format!("{PASSWD}linked:x:777:777::/:/bin/false\n")).unwrap();
    std::fs::remove_file(node.host.join("etc/passwd")).unwrap();
    symlink(&fake, node.host.join("etc/passwd")).unwrap();
    let desired = file("a.json", WEB, 0o644, "linked", "root");
    let rejected = assert_refused(
        &node,
        std::slice::from_ref(&desired),
        &desired.path,
        ErrorCode::UnknownOwner,
    );
    assert!(
        rejected.errors[0].message.contains("/etc/passwd"),
        "{}",
        rejected.errors[0].message
    );
}

#[test]
fn a_failure_midway_leaves_each_file_old_or_new_and_removes_nothing() {
    let node = Node::new();
    let c = profile("c.json", &profile_text("c"));
    node.applier()
        .apply(
            "r1",
            &[
                profile("a.json", &profile_text("old a")),
                profile("b.json", &profile_text("old b")),
                c.clone(),
            ],
        )
        .unwrap();

    // Passes every check, then b.json turns into a directory while a.json is being written.
    let b_on_disk = node.path(&format!("{ROOT}/b.json"));
    let obstacle = b_on_disk.clone();
    let hook = WriteHook::new(move |point, path| {
        if point == PausePoint::BeforeRename && path.ends_with("/a.json") {
            std::fs::remove_file(&obstacle).unwrap();
            std::fs::create_dir(&obstacle).unwrap();
        }
    });
    let mut applier = node.applier().with_hook(hook);
    let new = [
        profile("a.json", &profile_text("new a")),
        profile("b.json", &profile_text("new b")),
    ];
    let rejected = applier.apply("r2", &new).unwrap_err();
    assert_eq!(rejected.errors.len(), 1, "{:#?}", rejected.errors);
    assert_eq!(
        (rejected.errors[0].path.as_str(), rejected.errors[0].code),
        (new[1].path.as_str(), ErrorCode::NotRegular)
    );
    assert_eq!(
        rejected.last_good_revision, "",
        "r1 is no longer completely on disk"
    );
    assert_eq!(
        std::fs::read_to_string(node.path(&new[0].path)).unwrap(),
        profile_text("new a")
    );
    assert!(b_on_disk.is_dir());
    assert!(
        node.path(&c.path).exists(),
        "nothing is removed when the new set did not land"
    );
    assert_eq!(rejected.observed[0].sha256, new[0].sha256);
    assert_eq!(rejected.observed[1].kind, Some(ObservedKind::Directory));
    assert!(node.temp_leftovers().is_empty());

    // Once the obstacle is gone the same set converges, and only then is c.json removed.
    std::fs::remove_dir(&b_on_disk).unwrap();
    let applied = applied(applier.apply("r2", &new));
    assert_eq!(applied.written, vec![new[1].path.clone()]);
    assert_eq!(applied.removed, vec![c.path.clone()]);
    assert_eq!(applier.revision(), "r2");
}

#[test]
fn an_uppercase_sha256_is_accepted_and_still_compared_correctly() {
    let node = Node::new();
    let mut applier = node.applier();
    let mut desired = profile("web.json", WEB);
    desired.sha256 = desired.sha256.to_ascii_uppercase();
    assert!(
        !applied(applier.apply("r1", std::slice::from_ref(&desired)))
            .written
            .is_empty()
    );
    assert!(
        applied(applier.apply("r1", std::slice::from_ref(&desired)))
            .written
            .is_empty()
    );
    assert!(applier.check_drift().is_empty());
}
