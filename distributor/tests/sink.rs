//! The YAML directory sink (GitOps): atomic writes, no rewrite when unchanged, pruning of
//! our stale files, and never touching files that are not ours.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use seccomp_distributor::sinks::DirSink;
use seccomp_rollout::nci::{self, NodeConfigItem, ProfileRef, Target};
use seccomp_rollout::selector;

fn nci(name: &str, content: &str) -> NodeConfigItem {
    let t = Target::new(selector::parse("kubernetes.io/os=linux").unwrap());
    nci::render(
        ProfileRef {
            name: "web",
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
fn writes_prunes_and_leaves_foreign_files_alone() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gitops");
    let sink = DirSink::new(&out);

    let a = nci("a", "{}");
    let b = nci("b", "{\"x\":1}");
    let r = sink.sync(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(r.written, ["a", "b"]);
    let text = std::fs::read_to_string(out.join("a.yaml")).unwrap();
    let back: NodeConfigItem = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(back, a, "the file is the NCI, byte for byte");

    // Foreign files: another tool's YAML, a non-YAML file, and YAML that is not an NCI.
    std::fs::write(
        out.join("theirs.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: theirs\n",
    )
    .unwrap();
    std::fs::write(out.join("README.md"), "hello").unwrap();
    std::fs::write(out.join("broken.yaml"), ": : :").unwrap();

    // Unchanged: not rewritten (the inode stays the same).
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(out.join("a.yaml")).unwrap().ino();
    let b2 = nci("b", "{\"x\":2}");
    let r = sink.sync(&[a.clone(), b2.clone()]).unwrap();
    assert_eq!(r.unchanged, ["a"]);
    assert_eq!(r.written, ["b"]);
    assert_eq!(std::fs::metadata(out.join("a.yaml")).unwrap().ino(), ino);
    let back: NodeConfigItem =
        serde_yaml_ng::from_str(&std::fs::read_to_string(out.join("b.yaml")).unwrap()).unwrap();
    assert_eq!(back, b2);

    // b is no longer desired: removed; the foreign files stay.
    let r = sink.sync(&[a]).unwrap();
    assert_eq!(r.removed, ["b"]);
    assert!(!out.join("b.yaml").exists());
    for f in ["theirs.yaml", "README.md", "broken.yaml"] {
        assert!(out.join(f).exists(), "{f} must be left alone");
    }
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn refuses_to_overwrite_a_foreign_file_with_the_same_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.yaml"), "kind: ConfigMap\n").unwrap();
    let err = DirSink::new(dir.path())
        .sync(&[nci("a", "{}")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not ours"), "{err}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.yaml")).unwrap(),
        "kind: ConfigMap\n"
    );
}

#[test]
fn refuses_duplicates_and_bad_names() {
    let dir = tempfile::tempdir().unwrap();
    let sink = DirSink::new(dir.path());
    assert!(
        sink.sync(&[nci("a", "{}"), nci("a", "{}")])
            .unwrap_err()
            .to_string()
            .contains("twice")
    );
    let mut bad = nci("a", "{}");
    bad.metadata.name = "../escape".into();
    assert!(sink.sync(&[bad]).is_err());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written on bad input"
    );
}

#[test]
fn a_temporary_file_left_by_a_killed_distributor_neither_blocks_nor_stays() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gitops");
    std::fs::create_dir(&out).unwrap();
    // What a write interrupted by SIGKILL leaves: a temporary name of the shared writer,
    // and one of the old `.{name}.tmp-{pid}` form with PID 1, which a restarted container
    // gets again (that one blocked the NCI forever).
    let stale = out.join(".a.yaml.tmp.0123456789abcdef");
    std::fs::write(&stale, "half").unwrap();
    std::fs::write(out.join(".a.yaml.tmp-1"), "half").unwrap();
    let r = DirSink::new(&out).sync(&[nci("a", "{}")]).unwrap();
    assert_eq!(r.written, ["a"]);
    assert!(!stale.exists(), "the stale temporary files are removed");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a.yaml"]);
}
