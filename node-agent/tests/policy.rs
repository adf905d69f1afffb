#![allow(clippy::unwrap_used)]
//! The agent's policy, one rule at a time: only seccomp profiles (`*.json`, valid content),
//! only where profiles go (the allowed root), only harmless modes, and never over a file it
//! did not place (unless told to take such files over). Each refusal names the path with a
//! stable code and writes nothing at all.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{Node, ROOT, applied, assert_refused_by, file, profile, profile_text};
use seccomp_node_agent::{Applier, DesiredFile, ErrorCode, PausePoint, WriteHook};

/// Mode, uid and gid of a node path (this binary runs no `stat`: a child forked while an
/// applier is open would hold its state directory's lock until it execs).
fn attrs(node: &Node, path: &str) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(node.path(path)).unwrap();
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

fn good() -> DesiredFile {
    profile("good.json", &profile_text("good"))
}

/// Refused, with `code` naming the entry's path, next to a good entry; nothing written.
fn refused(applier: &mut Applier, node: &Node, bad: &DesiredFile, code: ErrorCode) -> String {
    let rejected = assert_refused_by(applier, node, &[good(), bad.clone()], &bad.path, code);
    assert!(
        rejected.errors.iter().all(|e| e.path == bad.path),
        "only the bad entry is an error: {:#?}",
        rejected.errors
    );
    assert!(!node.path(&good().path).exists());
    rejected.errors[0].message.clone()
}

#[test]
fn files_and_directories_outside_the_allowed_root_are_refused() {
    let node = Node::new();
    let mut applier = node.applier();
    let passwd = std::fs::read(node.path("/etc/passwd")).unwrap();
    let content = profile_text("evil");
    for path in [
        "/etc/passwd",
        "/etc/evil.json",
        "/var/lib/kubelet/evil.json",
    ] {
        let bad = DesiredFile::file(path, content.as_bytes(), 0o644, "root", "root");
        refused(&mut applier, &node, &bad, ErrorCode::OutsideRoot);
    }
    for path in [
        "/etc/",
        "/etc/cron.d",
        "/",
        "/var/lib/kubelet",
        "/var/lib/kubelet/",
    ] {
        let bad = DesiredFile::directory(path, 0o755, "root", "root");
        refused(&mut applier, &node, &bad, ErrorCode::OutsideRoot);
    }
    assert_eq!(std::fs::read(node.path("/etc/passwd")).unwrap(), passwd);
    assert!(!node.path("/etc/cron.d").exists());
}

#[test]
fn a_file_not_named_json_is_refused() {
    let node = Node::new();
    let mut applier = node.applier();
    let content = profile_text("x");
    for name in ["run.sh", "a.json.bak", "a.JSON", ".json", "json"] {
        let bad = profile(name, &content);
        let message = refused(&mut applier, &node, &bad, ErrorCode::NotJson);
        assert!(message.contains("*.json"), "{message}");
    }
    // In a subdirectory too, and the subdirectory is not created.
    let nested = DesiredFile::file(format!("{ROOT}/sub/cron"), content, 0o644, "root", "root");
    refused(&mut applier, &node, &nested, ErrorCode::NotJson);
    assert!(!node.path(&format!("{ROOT}/sub")).exists());
}

#[test]
fn set_id_sticky_execute_and_other_write_modes_are_refused() {
    let node = Node::new();
    let mut applier = node.applier();
    let content = profile_text("x");
    for mode in [
        0o4755, 0o4644, 0o2644, 0o1644, 0o755, 0o744, 0o646, 0o666, 0o7777,
    ] {
        let bad = file("a.json", &content, mode, "root", "root");
        let message = refused(&mut applier, &node, &bad, ErrorCode::ForbiddenMode);
        assert!(message.contains(&format!("{mode:04o}")), "{message}");
    }
    for mode in [0o1777, 0o777, 0o2755, 0o4755, 0o757] {
        let bad = DesiredFile::directory(format!("{ROOT}/team"), mode, "root", "root");
        refused(&mut applier, &node, &bad, ErrorCode::ForbiddenMode);
        assert!(!node.path(&format!("{ROOT}/team")).exists());
    }
    // The allowed root itself, declared with a forbidden mode, is refused even though an
    // existing directory would be left as it is.
    let root = DesiredFile::directory(ROOT, 0o1777, "root", "root");
    refused(&mut applier, &node, &root, ErrorCode::ForbiddenMode);
    assert_eq!(
        std::fs::metadata(node.path(ROOT)).unwrap().mode() & 0o7777,
        0o755
    );
}

#[test]
fn modes_the_policy_allows_land_exactly() {
    let node = Node::new();
    let mut applier = node.applier();
    let desired = vec![
        file("group.json", &profile_text("g"), 0o664, "root", "root"),
        file("private.json", &profile_text("p"), 0o400, "root", "root"),
        DesiredFile::directory(format!("{ROOT}/search"), 0o711, "root", "root"),
        // The seed NodeConfigItem's directory entry: "0644", made searchable.
        DesiredFile::directory(format!("{ROOT}/seed"), 0o644, "root", "root"),
    ];
    applied(applier.apply("r1", &desired));
    assert_eq!(attrs(&node, &format!("{ROOT}/group.json")), (0o664, 0, 0));
    assert_eq!(attrs(&node, &format!("{ROOT}/private.json")), (0o400, 0, 0));
    assert_eq!(attrs(&node, &format!("{ROOT}/search")), (0o711, 0, 0));
    assert_eq!(attrs(&node, &format!("{ROOT}/seed")), (0o755, 0, 0));
}

#[test]
fn content_that_is_not_a_valid_profile_is_refused() {
    let node = Node::new();
    let mut applier = node.applier();
    let cases: [(&[u8], &str); 6] = [
        (b"", "empty-file"),
        (b"{}", "missing-default-action"),
        (b"#!/bin/sh\nrm -rf /\n", "invalid-json"),
        (b"\x7fELF\x02\x01\x01", "invalid-json"),
        (br#"{"defaultAction":"SCMP_ACT_NOPE"}"#, "unknown-action"),
        (
            br#"{"defaultAction":"SCMP_ACT_ERRNO","defaultAction":"SCMP_ACT_ALLOW"}"#,
            "duplicate-key",
        ),
    ];
    for (content, diagnostic) in cases {
        let bad = DesiredFile::file(format!("{ROOT}/bad.json"), content, 0o644, "root", "root");
        let message = refused(&mut applier, &node, &bad, ErrorCode::InvalidProfile);
        assert!(
            message.contains(&format!("[{diagnostic}]")),
            "the first diagnostics are quoted: {message}"
        );
    }
}

#[test]
fn a_profile_with_only_warnings_lands() {
    let node = Node::new();
    let mut applier = node.applier();
    let content = r#"{"defaultAction":"SCMP_ACT_ERRNO","comment":"unknown keys only warn"}"#;
    let desired = profile("warned.json", content);
    applied(applier.apply("r1", std::slice::from_ref(&desired)));
    assert_eq!(
        std::fs::read_to_string(node.path(&desired.path)).unwrap(),
        content
    );
}

#[test]
fn every_broken_rule_of_an_entry_is_reported() {
    let node = Node::new();
    let mut applier = node.applier();
    let bad = DesiredFile::file(format!("{ROOT}/x.sh"), "echo", 0o4755, "root", "root");
    let rejected = assert_refused_by(
        &mut applier,
        &node,
        &[good(), bad.clone()],
        &bad.path,
        ErrorCode::NotJson,
    );
    let codes: Vec<ErrorCode> = rejected.errors.iter().map(|e| e.code).collect();
    assert_eq!(
        codes,
        [
            ErrorCode::NotJson,
            ErrorCode::ForbiddenMode,
            ErrorCode::InvalidProfile
        ]
    );
}

/// A file someone else put at the path of `desired`, with `content` and mode 0644.
fn foreign(node: &Node, desired: &DesiredFile, content: &str) {
    std::fs::write(node.path(&desired.path), content).unwrap();
    std::fs::set_permissions(
        node.path(&desired.path),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
}

#[test]
fn a_foreign_file_with_other_bytes_is_refused_and_kept() {
    let node = Node::new();
    let mut applier = node.applier();
    let desired = profile("web.json", &profile_text("ours"));
    for theirs in [profile_text("theirs"), "not even a profile".to_owned()] {
        foreign(&node, &desired, &theirs);
        let message = refused(&mut applier, &node, &desired, ErrorCode::ForeignFile);
        assert!(message.contains("--adopt-existing"), "{message}");
        assert_eq!(
            std::fs::read_to_string(node.path(&desired.path)).unwrap(),
            theirs
        );
    }
    // Still refused by a restarted agent: nothing was recorded.
    drop(applier);
    refused(&mut node.applier(), &node, &desired, ErrorCode::ForeignFile);
}

#[test]
fn with_adopt_existing_a_foreign_file_is_taken_over_and_later_removed() {
    let node = Node::new();
    let desired = profile("web.json", &profile_text("ours"));
    foreign(&node, &desired, &profile_text("theirs"));
    let mut applier = node.applier().with_adopt_existing(true);
    let result = applied(applier.apply("r1", &[good(), desired.clone()]));
    assert!(result.written.contains(&desired.path), "{result:#?}");
    assert_eq!(
        std::fs::read_to_string(node.path(&desired.path)).unwrap(),
        profile_text("ours")
    );
    // Taken over, it is the agent's like any file it placed: without the flag now, updated
    // without a refusal, and removed once no longer desired.
    drop(applier);
    let mut applier = node.applier();
    let updated = profile("web.json", &profile_text("ours, v2"));
    applied(applier.apply("r2", &[good(), updated]));
    let result = applied(applier.apply("r3", &[good()]));
    assert_eq!(result.removed, vec![desired.path.clone()]);
    assert!(!node.path(&desired.path).exists());
}

#[test]
fn with_adopt_existing_the_policy_still_holds() {
    let node = Node::new();
    let desired = file("web.json", &profile_text("ours"), 0o4755, "root", "root");
    foreign(&node, &desired, "theirs");
    let mut applier = node.applier().with_adopt_existing(true);
    assert_refused_by(
        &mut applier,
        &node,
        &[good(), desired.clone()],
        &desired.path,
        ErrorCode::ForbiddenMode,
    );
    assert_eq!(
        std::fs::read_to_string(node.path(&desired.path)).unwrap(),
        "theirs"
    );
}

#[test]
fn a_foreign_file_with_the_desired_bytes_is_adopted_and_never_removed() {
    let node = Node::new();
    let desired = profile("web.json", &profile_text("same"));
    foreign(&node, &desired, &profile_text("same"));
    // Another mode than desired: the bytes are what make it adoptable; its mode is then set.
    std::fs::set_permissions(
        node.path(&desired.path),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let mut applier = node.applier();
    applied(applier.apply("r1", std::slice::from_ref(&desired)));
    assert_eq!(attrs(&node, &desired.path), (0o644, 0, 0));

    // Adopted, it is updated like the agent's own files...
    let v2 = profile("web.json", &profile_text("same, v2"));
    let result = applied(applier.apply("r2", std::slice::from_ref(&v2)));
    assert_eq!(result.written, vec![v2.path.clone()]);
    // ...but never removed, also after a restart.
    drop(applier);
    let mut applier = node.applier();
    let result = applied(applier.apply("r3", &[]));
    assert!(result.removed.is_empty(), "{result:#?}");
    assert_eq!(
        std::fs::read_to_string(node.path(&desired.path)).unwrap(),
        profile_text("same, v2")
    );
}

#[test]
fn a_foreign_file_that_appears_after_the_agent_removed_its_own_is_refused() {
    let node = Node::new();
    let mut applier = node.applier();
    let desired = profile("web.json", &profile_text("ours"));
    applied(applier.apply("r1", std::slice::from_ref(&desired)));
    applied(applier.apply("r2", &[]));
    assert!(!node.path(&desired.path).exists());
    // Someone else puts a file there; the agent's earlier claim is gone with its own file.
    foreign(&node, &desired, &profile_text("theirs"));
    refused(&mut applier, &node, &desired, ErrorCode::ForeignFile);
}

#[test]
fn a_foreign_file_that_appears_during_the_write_is_not_replaced() {
    let node = Node::new();
    let desired = profile("web.json", &profile_text("ours"));
    let target = node.path(&desired.path);
    let planted = target.clone();
    // Checked and found missing; someone else's file lands just before the rename.
    let hook = WriteHook::new(move |point, _| {
        if point == PausePoint::BeforeRename {
            std::fs::write(&planted, "theirs").unwrap();
        }
    });
    let mut applier = node.applier().with_hook(hook);
    let rejected = applier
        .apply("r1", std::slice::from_ref(&desired))
        .unwrap_err();
    let codes: Vec<_> = rejected
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.code))
        .collect();
    assert_eq!(codes, [(desired.path.as_str(), ErrorCode::ForeignFile)]);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "theirs");
    assert!(
        node.temp_leftovers().is_empty(),
        "{:?}",
        node.temp_leftovers()
    );
    // Never the agent's, so never removed.
    applied(applier.apply("r2", &[]));
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "theirs");
}
