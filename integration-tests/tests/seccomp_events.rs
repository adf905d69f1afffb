#![allow(clippy::unwrap_used)]
//! The complain-mode loop over the real binaries (#19): agents follow a log file with the
//! kernel's seccomp records (`--audit-log`), tell each record's process by container
//! through `/proc/<pid>/cgroup` under the host root, and send the events counted; the
//! distributor merges those of two agents; an agent restarted sends nothing twice;
//! `seccompctl events` lists them and `seccompctl profile suggest` turns them into the
//! next version, which `--publish` stores.

use std::io::Write as _;
use std::time::Duration;

use integration_tests::{Stack, Tuning, poll};

const DEADLINE: Duration = Duration::from_secs(30);
const SYSLOG: &str = "/var/log/syslog";
const CONTAINER: &str = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899";

/// The seed's complain-mode profile (`SCMP_ACT_LOG` default).
const MYPROFILE: &str = r#"{
  "defaultAction": "SCMP_ACT_LOG",
  "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
  "syscalls": [
    {"names": ["read", "write", "exit", "exit_group"], "action": "SCMP_ACT_ALLOW"}
  ]
}
"#;

/// Seconds since the epoch when the test started (records older than the distributor's
/// retention are not kept, so they are made now).
fn epoch() -> u64 {
    static AT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *AT.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    })
}

/// A kernel seccomp record as syslog has it (`audit: type=1326`), `serial` ms after
/// [`epoch`].
fn record(serial: u32, pid: u32, arch: &str, syscall: u32) -> String {
    format!(
        "Dec  1 12:00:00 node kernel: [  100.{serial:06}] audit: type=1326 audit({}.{:03}:{serial}): auid=4294967295 uid=0 gid=0 ses=4294967295 subj=unconfined pid={pid} comm=\"app\" exe=\"/usr/bin/app\" sig=0 arch={arch} syscall={syscall} compat=0 ip=0x7f0000001000 code=0x7ffc0000\n",
        epoch(),
        serial % 1000
    )
}

fn append(stack: &Stack, node: usize, lines: &[String]) {
    let path = stack.nodes[node].path(SYSLOG);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
    }
    f.sync_all().unwrap();
}

/// `seccompctl events -o json` with these flags.
fn events(stack: &Stack, flags: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["events", "-o", "json"];
    args.extend_from_slice(flags);
    let out: serde_json::Value = serde_json::from_str(&stack.ctl_ok(&args)).unwrap();
    out["events"].as_array().unwrap().clone()
}

/// The count of `syscall` on `arch` at `node`.
fn count(events: &[serde_json::Value], node: &str, syscall: &str, arch: &str) -> u64 {
    events
        .iter()
        .filter(|e| e["node"] == node && e["syscall"] == syscall && e["arch"] == arch)
        .map(|e| e["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn events_from_two_agents_merge_a_restart_resends_nothing_and_suggest_publishes_the_next_version() {
    let tuning = Tuning {
        agent_args: ["--audit-log", SYSLOG, "--audit-interval", "200ms"]
            .map(str::to_owned)
            .to_vec(),
        ..Tuning::default()
    };
    let mut stack = Stack::start_tuned(
        &[
            ("node-1", &["zone=zone-a"][..]),
            ("node-2", &["zone=zone-a"][..]),
        ],
        tuning,
    );
    // node-1's pid 4242 runs in a containerd container (its /proc under the host root).
    let proc_dir = stack.nodes[0].path("/proc/4242");
    std::fs::create_dir_all(&proc_dir).unwrap();
    std::fs::write(
        proc_dir.join("stat"),
        "4242 (app) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 1 0 0 20 0 1 0 777 1000000 100\n",
    )
    .unwrap();
    std::fs::write(
        proc_dir.join("cgroup"),
        format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{CONTAINER}.scope\n"),
    )
    .unwrap();

    // x86_64 getppid (110) and openat (257), twice on node-1 and three times on node-2;
    // i386 socketcall (102 in its own table, getuid in x86_64's) on node-2.
    append(
        &stack,
        0,
        &[
            record(1, 4242, "c000003e", 110),
            record(2, 4242, "c000003e", 110),
            record(3, 4242, "c000003e", 257),
        ],
    );
    append(
        &stack,
        1,
        &[
            record(1, 99, "c000003e", 110),
            record(2, 99, "c000003e", 110),
            record(3, 99, "c000003e", 110),
            record(4, 99, "40000003", 102),
        ],
    );
    let all = poll("the events of both nodes", DEADLINE, || {
        let all = events(&stack, &[]);
        (count(&all, "node-1", "getppid", "SCMP_ARCH_X86_64") == 2
            && count(&all, "node-2", "getppid", "SCMP_ARCH_X86_64") == 3
            && count(&all, "node-2", "socketcall", "SCMP_ARCH_X86") == 1
            && count(&all, "node-1", "openat", "SCMP_ARCH_X86_64") == 1)
            .then_some(all)
    });
    let getuid: Vec<_> = all.iter().filter(|e| e["syscall"] == "getuid").collect();
    assert!(getuid.is_empty(), "i386's 102 is socketcall: {getuid:?}");
    let mine = all
        .iter()
        .find(|e| e["node"] == "node-1" && e["syscall"] == "getppid")
        .unwrap();
    assert_eq!(mine["container_id"], CONTAINER, "{mine}");
    assert_eq!(mine["exe"], "/usr/bin/app");
    assert_eq!(mine["action"], "SCMP_ACT_LOG");
    let at = |field: &str| {
        humantime::parse_rfc3339(mine[field].as_str().unwrap())
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    };
    assert_eq!(
        (at("first_seen").as_millis(), at("last_seen").as_millis()),
        (
            u128::from(epoch()) * 1000 + 1,
            u128::from(epoch()) * 1000 + 2
        ),
        "the kernel's times, from the records: {mine}"
    );
    let other = all
        .iter()
        .find(|e| e["node"] == "node-2" && e["syscall"] == "getppid")
        .unwrap();
    assert_eq!(
        other["container_id"], "",
        "pid 99 has no /proc entry: not guessed"
    );
    // Filters.
    assert!(
        events(&stack, &["--node", "node-2"])
            .iter()
            .all(|e| e["node"] == "node-2")
    );
    assert!(events(&stack, &["--since", "2099-01-01T00:00:00Z"]).is_empty());
    assert!(
        events(&stack, &["--profile", "app"]).is_empty(),
        "no pods known: nothing is attributed to a profile"
    );

    // A restarted agent goes on from its position: one new record, nothing twice.
    let agent = stack.nodes[0].agent.take().unwrap();
    assert!(agent.terminate().success());
    append(&stack, 0, &[record(4, 4242, "c000003e", 110)]);
    stack.start_agent(0, None);
    poll("node-1's third getppid", DEADLINE, || {
        (count(
            &events(&stack, &[]),
            "node-1",
            "getppid",
            "SCMP_ARCH_X86_64",
        ) == 3)
            .then_some(())
    });
    // Another round of reads and sends passes; the count stays.
    append(&stack, 0, &[record(5, 4242, "c000003e", 39)]);
    poll("node-1's getpid", DEADLINE, || {
        (count(&events(&stack, &[]), "node-1", "getpid", "SCMP_ARCH_X86_64") == 1).then_some(())
    });
    let after = events(&stack, &[]);
    assert_eq!(count(&after, "node-1", "getppid", "SCMP_ARCH_X86_64"), 3);
    assert_eq!(count(&after, "node-1", "openat", "SCMP_ARCH_X86_64"), 1);

    // The next version from what was seen, enforced.
    let file = stack.dir.path().join("app.json");
    std::fs::write(&file, MYPROFILE).unwrap();
    stack.ctl_ok(&["profile", "publish", "app", file.to_str().unwrap()]);
    let unattributed = stack.ctl(&["profile", "suggest", "app", "--enforce", "-o", "json"]);
    let s: serde_json::Value = serde_json::from_slice(&unattributed.stdout).unwrap();
    assert_eq!(
        s["observed"].as_array().unwrap().len(),
        0,
        "without --include-unattributed no event counts for app: {s}"
    );
    let written = stack.dir.path().join("suggested.json");
    let out = stack.ctl_ok(&[
        "profile",
        "suggest",
        "app",
        "--include-unattributed",
        "--node-selector",
        "zone=zone-a",
        "--enforce",
        "--write",
        written.to_str().unwrap(),
        "-o",
        "json",
    ]);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["valid"], true, "{s}");
    assert_eq!(s["base_version"], 1);
    assert_eq!(
        s["allowed"],
        serde_json::json!(["getpid", "getppid", "openat", "socketcall"])
    );
    assert_eq!(s["profile"]["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(s["profile"]["defaultErrnoRet"], 1);
    let getppid = s["observed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["syscall"] == "getppid")
        .unwrap();
    assert_eq!(
        (getppid["count"].as_u64(), getppid["nodes"].as_u64()),
        (Some(6), Some(2))
    );
    let rules = s["profile"]["syscalls"].as_array().unwrap();
    let socketcall_rule = rules
        .iter()
        .find(|r| {
            r["names"]
                .as_array()
                .unwrap()
                .iter()
                .any(|n| n == "socketcall")
        })
        .unwrap();
    assert!(
        socketcall_rule["comment"]
            .as_str()
            .unwrap()
            .contains("SCMP_ARCH_X86 "),
        "seen on i386 only, and said so: {socketcall_rule}"
    );
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&written).unwrap()).unwrap();
    assert_eq!(on_disk, s["profile"]);
    assert!(s["published_version"].is_null());
    // The text form says the diff and the verdict.
    let text = stack.ctl_ok(&[
        "profile",
        "suggest",
        "app",
        "--include-unattributed",
        "--enforce",
    ]);
    assert!(
        text.contains("default action: SCMP_ACT_LOG -> SCMP_ACT_ERRNO"),
        "{text}"
    );
    assert!(text.contains("+ socketcall"), "{text}");
    assert!(text.contains("verdict: valid"), "{text}");

    // --publish stores it as version 2.
    let out = stack.ctl_ok(&[
        "profile",
        "suggest",
        "app",
        "--include-unattributed",
        "--enforce",
        "--publish",
        "-o",
        "json",
    ]);
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["published_version"], 2, "{s}");
    let raw = stack.ctl_ok(&["profile", "get", "app@2", "--raw"]);
    let v2: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v2, s["profile"]);
}
