//! Following a log for seccomp records: new lines only, a line only once it is whole,
//! truncation, rotation, and a restart that resends nothing.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::io::Write as _;
use std::path::Path;

use seccomp_node_agent::audit_log::{LogFollower, state_file};

fn record(serial: u64, syscall: u32) -> String {
    format!(
        "type=SECCOMP msg=audit(1700000000.{:03}:{serial}): pid=42 comm=\"app\" exe=\"/app\" sig=0 arch=c000003e syscall={syscall} compat=0 ip=0x1 code=0x7ffc0000\n",
        serial % 1000
    )
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn serials(f: &mut LogFollower) -> Vec<u64> {
    f.poll().unwrap().iter().map(|r| r.serial).collect()
}

#[test]
fn only_new_whole_lines_and_only_seccomp_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut f = LogFollower::new(&log, state_file(dir.path(), &log));
    assert!(serials(&mut f).is_empty(), "no log yet: nothing, no error");
    append(&log, &record(1, 41));
    append(
        &log,
        "type=SYSCALL msg=audit(1700000000.000:2): arch=c000003e syscall=41\n",
    );
    append(&log, &record(3, 110));
    assert_eq!(serials(&mut f), [1, 3]);
    assert!(serials(&mut f).is_empty());
    // Half a line: not yet.
    let line = record(4, 257);
    let (head, tail) = line.split_at(40);
    append(&log, head);
    assert!(serials(&mut f).is_empty());
    append(&log, tail);
    assert_eq!(serials(&mut f), [4]);
}

#[test]
fn a_truncated_log_is_read_again_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("syslog");
    let mut f = LogFollower::new(&log, state_file(dir.path(), &log));
    append(&log, &record(1, 41));
    append(&log, &record(2, 41));
    assert_eq!(serials(&mut f), [1, 2]);
    // copytruncate: the same file, emptied, then written again.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .unwrap();
    append(&log, &record(3, 41));
    assert_eq!(serials(&mut f), [3]);
}

#[test]
fn a_rotated_log_is_read_to_its_end_then_the_new_one_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut f = LogFollower::new(&log, state_file(dir.path(), &log));
    append(&log, &record(1, 41));
    assert_eq!(serials(&mut f), [1]);
    // The writer adds one more, then the log is renamed away and a new one started.
    append(&log, &record(2, 41));
    std::fs::rename(&log, dir.path().join("audit.log.1")).unwrap();
    append(&log, &record(3, 41));
    assert_eq!(serials(&mut f), [2, 3]);
    append(&log, &record(4, 41));
    assert_eq!(serials(&mut f), [4]);
}

#[test]
fn a_restarted_follower_resends_nothing_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let state = state_file(dir.path(), &log);
    {
        let mut f = LogFollower::new(&log, &state);
        append(&log, &record(1, 41));
        append(&log, &record(2, 41));
        // And half of a third.
        append(&log, &record(3, 41)[..30]);
        assert_eq!(serials(&mut f), [1, 2]);
    }
    append(&log, &record(3, 41)[30..]);
    let mut f = LogFollower::new(&log, &state);
    assert_eq!(serials(&mut f), [3], "the whole third line, and only it");
    // Rotated while the agent was down: the new file is read from its start.
    drop(f);
    std::fs::rename(&log, dir.path().join("audit.log.1")).unwrap();
    append(&log, &record(4, 41));
    let mut f = LogFollower::new(&log, &state);
    assert_eq!(serials(&mut f), [4]);
}

#[test]
fn each_log_has_a_state_file_of_its_own() {
    let dir = Path::new("/var/lib/seccomp-agent");
    let a = state_file(dir, Path::new("/var/log/audit/audit.log"));
    let b = state_file(dir, Path::new("/var/log/syslog"));
    assert_ne!(a, b);
    assert_eq!(a.parent(), Some(dir));
}
