//! The registry over real gRPC: a server in-process on `127.0.0.1:0`, real sled on a
//! temporary directory, the generated client.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use prost::Message as _;
use seccomp_proto::registry::v1 as pb;
use seccomp_proto::registry::v1::registry_client::RegistryClient;
use seccomp_registry::{Config, RunError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Status};

const DEADLINE: Duration = Duration::from_secs(30);

/// A registry running in this process.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
    dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    async fn start_with(configure: impl FnOnce(&mut Config)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        Server::start_in(dir, configure).await
    }

    async fn start_in(dir: tempfile::TempDir, configure: impl FnOnce(&mut Config)) -> Server {
        let mut config = Config::new(dir.path().join("data"));
        configure(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(seccomp_registry::run(config, listener, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            stop: Some(stop),
            task: Some(task),
            dir,
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn client(&self) -> RegistryClient<Channel> {
        RegistryClient::new(self.channel().await).max_decoding_message_size(16 << 20)
    }

    /// Shut down gracefully and hand back the data directory.
    async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.stop.take().unwrap().send(());
        let task = self.task.take().unwrap();
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("run() returns after shutdown")
            .unwrap()
            .unwrap();
        self.dir
    }
}

fn profile(syscalls: &[&str]) -> Vec<u8> {
    let names: Vec<String> = syscalls.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "{{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": [{{\"names\": [{}], \"action\": \"SCMP_ACT_ALLOW\"}}]\n}}\n",
        names.join(", ")
    )
    .into_bytes()
}

fn publish_req(name: &str, content: &[u8]) -> pb::PublishRequest {
    pb::PublishRequest {
        name: name.to_owned(),
        content: content.to_vec(),
        description: String::new(),
        expected_latest_version: None,
    }
}

async fn publish(
    c: &mut RegistryClient<Channel>,
    name: &str,
    content: &[u8],
) -> pb::PublishResponse {
    c.publish(publish_req(name, content))
        .await
        .unwrap()
        .into_inner()
}

fn get_req(name: &str, selector: pb::get_profile_request::Selector) -> pb::GetProfileRequest {
    pb::GetProfileRequest {
        name: name.to_owned(),
        selector: Some(selector),
        include_content: None,
    }
}

async fn get(
    c: &mut RegistryClient<Channel>,
    name: &str,
    selector: pb::get_profile_request::Selector,
) -> Result<pb::ProfileVersion, Status> {
    Ok(c.get_profile(get_req(name, selector))
        .await?
        .into_inner()
        .profile
        .unwrap())
}

use pb::get_profile_request::Selector::{Digest, Latest, Version};

fn sha256(bytes: &[u8]) -> String {
    seccomp_profile::digest(bytes)
}

fn assert_status(
    result: Result<impl std::fmt::Debug, Status>,
    code: Code,
    parts: &[&str],
) -> Status {
    let status = result.expect_err("expected an error status");
    assert_eq!(status.code(), code, "{status:?}");
    for part in parts {
        assert!(
            status.message().contains(part),
            "message {:?} lacks {part:?}",
            status.message()
        );
    }
    status
}

/// The ValidationFailure packed into the status details, as the proto describes.
fn validation_failure(status: &Status) -> pb::ValidationFailure {
    let rpc = tonic_types::pb::Status::decode(status.details()).unwrap();
    assert_eq!(rpc.code, status.code() as i32);
    let any = rpc
        .details
        .iter()
        .find(|a| a.type_url == "type.googleapis.com/seccomp.registry.v1.ValidationFailure")
        .expect("a ValidationFailure detail");
    pb::ValidationFailure::decode(any.value.as_slice()).unwrap()
}

#[tokio::test]
async fn publish_get_history_diff() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let v1_bytes = profile(&["read", "write"]);
    // Odd whitespace and key order: bytes are stored as given, never reformatted.
    let v2_bytes = b"{\"syscalls\":[{\"action\":\"SCMP_ACT_ALLOW\",\"names\":[\"read\",\"write\",\"openat\"]}],   \"defaultAction\":\"SCMP_ACT_ERRNO\",\"defaultErrnoRet\":1}\n\n".to_vec();

    let mut req = publish_req("web", &v1_bytes);
    req.description = "first".into();
    let r1 = c.publish(req).await.unwrap().into_inner();
    assert_eq!((r1.version, r1.created), (1, true));
    assert_eq!(r1.digest, sha256(&v1_bytes));
    assert_eq!(r1.size, v1_bytes.len() as u64);
    assert!(r1.warnings.is_empty());
    let r2 = publish(&mut c, "web", &v2_bytes).await;
    assert_eq!((r2.version, r2.created), (2, true));

    let by_version = get(&mut c, "web", Version(1)).await.unwrap();
    assert_eq!(by_version.content, v1_bytes);
    assert_eq!(by_version.description, "first");
    assert_eq!(by_version.author, "anonymous");
    assert!(by_version.created_at.is_some());
    let latest = get(&mut c, "web", Latest(true)).await.unwrap();
    assert_eq!((latest.version, &latest.content), (2, &v2_bytes));
    let unset = c
        .get_profile(pb::GetProfileRequest {
            name: "web".into(),
            selector: None,
            include_content: Some(false),
        })
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    assert_eq!(unset.version, 2, "no selector means latest");
    assert!(unset.content.is_empty(), "include_content=false");
    assert_eq!(unset.size, v2_bytes.len() as u64);
    let by_digest = get(&mut c, "web", Digest(sha256(&v1_bytes))).await.unwrap();
    assert_eq!(by_digest.version, 1);

    let history = c
        .history(pb::HistoryRequest {
            name: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let versions: Vec<u64> = history.versions.iter().map(|v| v.version).collect();
    assert_eq!(versions, [2, 1], "newest first");
    assert!(history.versions.iter().all(|v| v.content.is_empty()));
    assert!(history.next_page_token.is_empty());

    let diff = c
        .diff(pb::DiffRequest {
            name: "web".into(),
            from_version: 1,
            to_version: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((diff.from_version, diff.to_version), (1, 2));
    assert_eq!(diff.from_digest, sha256(&v1_bytes));
    let d = diff.diff.unwrap();
    assert!(!d.identical);
    assert_eq!(d.default_action_before, "SCMP_ACT_ERRNO");
    assert_eq!(d.default_action_after, "SCMP_ACT_ERRNO(1)");
    assert_eq!(d.syscalls_added.len(), 1);
    assert_eq!(d.syscalls_added[0].name, "openat");
    assert_eq!(d.syscalls_added[0].action_after, "SCMP_ACT_ALLOW");
    assert!(d.syscalls_removed.is_empty() && d.syscalls_changed.is_empty());

    // Going back is the mirror image; a version against itself is identical.
    let back = c
        .diff(pb::DiffRequest {
            name: "web".into(),
            from_version: 2,
            to_version: 1,
        })
        .await
        .unwrap()
        .into_inner()
        .diff
        .unwrap();
    assert_eq!(back.syscalls_removed[0].name, "openat");
    let same = c
        .diff(pb::DiffRequest {
            name: "web".into(),
            from_version: 2,
            to_version: 2,
        })
        .await
        .unwrap()
        .into_inner()
        .diff
        .unwrap();
    assert!(same.identical);

    // Warnings are returned and stored with the version.
    let warn = br#"{"defaultAction":"SCMP_ACT_ERRNO","defualtErrnoRet":1}"#;
    let r = publish(&mut c, "warned", warn).await;
    assert_eq!(r.warnings.len(), 1);
    assert_eq!(r.warnings[0].code, "unknown-key");
    assert_eq!(r.warnings[0].severity, pb::Severity::Warning as i32);
    let stored = get(&mut c, "warned", Version(1)).await.unwrap();
    assert_eq!(stored.warnings, r.warnings);

    // Everything is still there after a restart on the same directory.
    drop(c);
    let dir = server.stop().await;
    let server = Server::start_in(dir, |_| {}).await;
    let mut c = server.client().await;
    assert_eq!(
        get(&mut c, "web", Version(2)).await.unwrap().content,
        v2_bytes
    );
    assert_eq!(
        publish(&mut c, "web", &profile(&["close"])).await.version,
        3
    );
    server.stop().await;
}

#[tokio::test]
async fn identical_bytes_return_the_live_version() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let a = profile(&["read"]);
    let b = profile(&["write"]);
    assert!(publish(&mut c, "p", &a).await.created);
    let again = publish(&mut c, "p", &a).await;
    assert_eq!((again.version, again.created), (1, false));
    assert_eq!(publish(&mut c, "p", &b).await.version, 2);
    // Identical to an older live version: that version, not a new one, and no CAS check.
    let mut req = publish_req("p", &a);
    req.expected_latest_version = Some(7);
    let old = c.publish(req).await.unwrap().into_inner();
    assert_eq!((old.version, old.created), (1, false));
    assert_eq!(old.digest, sha256(&a));
    // The same bytes under another name are another profile.
    assert_eq!(publish(&mut c, "q", &a).await.version, 1);
    let history = c
        .history(pb::HistoryRequest {
            name: "p".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        history.versions.len(),
        2,
        "nothing was written for the repeats"
    );
}

#[tokio::test]
async fn compare_and_set() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let mut req = publish_req("cas", &profile(&["read"]));
    req.expected_latest_version = Some(0);
    assert_eq!(c.publish(req).await.unwrap().into_inner().version, 1);

    let mut stale = publish_req("cas", &profile(&["write"]));
    stale.expected_latest_version = Some(0);
    assert_status(
        c.publish(stale).await,
        Code::FailedPrecondition,
        &[
            "\"cas\"",
            "expected latest version 0",
            "latest version is 1",
        ],
    );
    let mut ok = publish_req("cas", &profile(&["write"]));
    ok.expected_latest_version = Some(1);
    assert_eq!(c.publish(ok).await.unwrap().into_inner().version, 2);
}

#[tokio::test]
async fn concurrent_publishers_never_share_a_number() {
    let server = Server::start().await;
    let channel = server.channel().await;
    let mut tasks = Vec::new();
    for t in 0..6 {
        let mut c = RegistryClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..8 {
                // Distinct bytes per publish: vary the whitespace.
                let content = format!(
                    "{{\"defaultAction\":\"SCMP_ACT_LOG\"{}}}",
                    " ".repeat(t * 100 + i)
                );
                let r = publish(&mut c, "shared", content.as_bytes()).await;
                assert!(r.created);
                got.push(r.version);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let set: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(set.len(), all.len(), "duplicate version numbers: {all:?}");
    assert_eq!(set, (1..=48).collect::<BTreeSet<u64>>());

    // Compare-and-set under contention: of many publishers expecting the same latest,
    // exactly one wins.
    let mut tasks = Vec::new();
    for t in 0..6 {
        let mut c = RegistryClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut req = publish_req(
                "shared",
                format!("{{\"defaultAction\":\"SCMP_ACT_TRAP\"{}}}", " ".repeat(t)).as_bytes(),
            );
            req.expected_latest_version = Some(48);
            c.publish(req).await.map(|r| r.into_inner().version)
        }));
    }
    let mut wins = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => wins.push(v),
            Err(s) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
        }
    }
    assert_eq!(wins, [49]);
}

#[tokio::test]
async fn deprecate_hides_from_latest() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let bytes: Vec<Vec<u8>> = ["read", "write", "close"]
        .iter()
        .map(|s| profile(&[s]))
        .collect();
    for b in &bytes {
        publish(&mut c, "d", b).await;
    }
    let deprecate = |version: u64, reason: &str| pb::DeprecateRequest {
        name: "d".into(),
        version,
        reason: reason.into(),
    };
    let r = c
        .deprecate(deprecate(3, "breaks nginx"))
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    assert!(r.deprecated);
    assert_eq!(r.deprecation_reason, "breaks nginx");
    assert!(r.deprecated_at.is_some());
    assert_eq!(get(&mut c, "d", Latest(true)).await.unwrap().version, 2);
    let v3 = get(&mut c, "d", Version(3)).await.unwrap();
    assert!(v3.deprecated, "still readable by number");
    assert_eq!(v3.content, bytes[2]);
    // Again: succeeds, keeps the first reason.
    let again = c
        .deprecate(deprecate(3, "other"))
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    assert_eq!(again.deprecation_reason, "breaks nginx");

    // A deprecated version's bytes are not "live": publishing them makes a new version.
    let r = publish(&mut c, "d", &bytes[2]).await;
    assert_eq!((r.version, r.created), (4, true));
    assert_eq!(
        get(&mut c, "d", Digest(sha256(&bytes[2])))
            .await
            .unwrap()
            .version,
        4
    );

    for v in [4, 2, 1] {
        c.deprecate(deprecate(v, "")).await.unwrap();
    }
    assert_status(
        get(&mut c, "d", Latest(true)).await,
        Code::NotFound,
        &["\"d\"", "no live version"],
    );
    let list = c
        .list_profiles(pb::ListProfilesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.profiles.len(), 1);
    assert_eq!(list.profiles[0].latest_version, 0);
    assert_eq!(list.profiles[0].version_count, 4);
    // Compare-and-set against "no live version".
    let mut req = publish_req("d", &profile(&["openat"]));
    req.expected_latest_version = Some(0);
    assert_eq!(c.publish(req).await.unwrap().into_inner().version, 5);
}

#[tokio::test]
async fn deleted_numbers_are_never_reused() {
    let server = Server::start().await;
    let mut c = server.client().await;
    publish(&mut c, "del", &profile(&["read"])).await;
    publish(&mut c, "del", &profile(&["write"])).await;
    let delete = |version| pb::DeleteVersionRequest {
        name: "del".into(),
        version,
    };
    c.delete_version(delete(2)).await.unwrap();
    assert_status(
        get(&mut c, "del", Version(2)).await,
        Code::NotFound,
        &["profile \"del\" version 2 not found"],
    );
    assert_eq!(get(&mut c, "del", Latest(true)).await.unwrap().version, 1);
    assert_eq!(
        publish(&mut c, "del", &profile(&["write"])).await.version,
        3
    );
    c.delete_version(delete(1)).await.unwrap();
    c.delete_version(delete(3)).await.unwrap();
    let list = c
        .list_profiles(pb::ListProfilesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.profiles.is_empty(), "no stored version: not listed");
    assert_status(
        c.delete_version(delete(3)).await,
        Code::NotFound,
        &["\"del\""],
    );
    assert_eq!(publish(&mut c, "del", &profile(&["read"])).await.version, 4);
}

#[tokio::test]
async fn deletes_are_refused_while_the_distributor_cannot_be_asked() {
    // A port nothing listens on: bound, then closed.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let url = closed.clone();
    let server = Server::start_with(move |c| c.distributor = Some(url)).await;
    let mut c = server.client().await;
    publish(&mut c, "kept", &profile(&["read"])).await;
    let delete = |version| pb::DeleteVersionRequest {
        name: "kept".into(),
        version,
    };
    assert_status(
        c.delete_version(delete(1)).await,
        Code::Unavailable,
        &["cannot delete kept@1", "in use", &closed],
    );
    assert_eq!(get(&mut c, "kept", Version(1)).await.unwrap().version, 1);
    // What does not exist is still NOT_FOUND, without asking.
    assert_status(
        c.delete_version(delete(2)).await,
        Code::NotFound,
        &["\"kept\" version 2"],
    );
    let audit = c
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        audit
            .iter()
            .any(|e| e.method == "DeleteVersion" && e.result == "UNAVAILABLE"),
        "{audit:?}"
    );
}

/// A valid DNS-1123 subdomain of `len` bytes (labels of at most 63).
fn subdomain_of_len(len: usize) -> String {
    let mut name = String::new();
    while name.len() + 63 < len {
        name.push_str(&"n".repeat(63));
        name.push('.');
    }
    name.push_str(&"n".repeat(len - name.len()));
    name
}

#[tokio::test]
async fn a_name_too_long_for_a_node_file_is_refused_and_says_why() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let good = profile(&["read"]);

    let longest = subdomain_of_len(250);
    assert!(publish(&mut c, &longest, &good).await.created);
    for len in 251..=253 {
        let name = subdomain_of_len(len);
        assert_status(
            c.publish(publish_req(&name, &good)).await,
            Code::InvalidArgument,
            &[
                "invalid profile name",
                &format!("the name is {len} bytes long, over the limit of 250"),
                "\"<name>.json\" must fit in 255 bytes",
            ],
        );
        // Still a DNS-1123 subdomain, so asking for it is a plain miss.
        assert_status(get(&mut c, &name, Latest(true)).await, Code::NotFound, &[]);
    }
}

#[tokio::test]
async fn every_rejection_has_its_code_and_names_the_thing() {
    let server = Server::start_with(|c| c.max_profile_bytes = 4096).await;
    let mut c = server.client().await;
    let good = profile(&["read"]);

    for (name, reason) in [
        ("", "empty"),
        ("Web", "'W'"),
        ("a/b", "'/'"),
        ("../../etc/passwd", "'/'"),
        ("a..b", "'..'"),
        ("-a", "letter or digit"),
        ("a_b", "'_'"),
    ] {
        let status = assert_status(
            c.publish(publish_req(name, &good)).await,
            Code::InvalidArgument,
            &["invalid profile name", reason],
        );
        if !name.is_empty() {
            assert!(
                status.message().contains(&format!("{name:?}")),
                "{status:?}"
            );
        }
    }
    let long = "a".repeat(254);
    assert_status(
        c.publish(publish_req(&long, &good)).await,
        Code::InvalidArgument,
        &["over the limit of 250"],
    );

    // A bad profile: every diagnostic in the details.
    let bad = br#"{"defaultAction":"SCMP_ACT_ERRNO","defualtErrnoRet":1,"syscalls":[{"names":["opnat"],"action":"scmp_act_allow"}]}"#;
    let status = assert_status(
        c.publish(publish_req("bad", bad)).await,
        Code::InvalidArgument,
        &["profile \"bad\" is invalid", "2 errors"],
    );
    let failure = validation_failure(&status);
    let codes: Vec<(&str, &str, i32)> = failure
        .diagnostics
        .iter()
        .map(|d| (d.code.as_str(), d.path.as_str(), d.severity))
        .collect();
    assert!(
        codes.contains(&(
            "unknown-syscall",
            "/syscalls/0/names/0",
            pb::Severity::Error as i32
        )),
        "{codes:?}"
    );
    assert!(
        codes.contains(&(
            "unknown-action",
            "/syscalls/0/action",
            pb::Severity::Error as i32
        )),
        "{codes:?}"
    );
    assert!(
        codes.contains(&(
            "unknown-key",
            "/defualtErrnoRet",
            pb::Severity::Warning as i32
        )),
        "{codes:?}"
    );
    for garbage in [
        &b""[..],
        b"{}",
        b"\xff\xfe",
        b"[1,2]",
        b"{\"defaultAction\":\"SCMP_ACT_ALLOW\",}",
    ] {
        let status = assert_status(
            c.publish(publish_req("bad", garbage)).await,
            Code::InvalidArgument,
            &["\"bad\""],
        );
        assert!(!validation_failure(&status).diagnostics.is_empty());
    }

    // Over the profile limit (4096 here), and far over the gRPC message limit.
    let big = format!("{{\"defaultAction\":\"SCMP_ACT_LOG\"{}}}", " ".repeat(5000));
    assert_status(
        c.publish(publish_req("big", big.as_bytes())).await,
        Code::ResourceExhausted,
        &["\"big\"", "5032 bytes", "limit of 4096 bytes"],
    );
    let huge = vec![b' '; 2 << 20];
    assert_status(
        c.publish(publish_req("huge", &huge)).await,
        Code::ResourceExhausted,
        &["too large"],
    );

    // Unknown things.
    publish(&mut c, "known", &good).await;
    assert_status(
        get(&mut c, "nope", Latest(true)).await,
        Code::NotFound,
        &["profile \"nope\" not found"],
    );
    assert_status(
        get(&mut c, "known", Version(9)).await,
        Code::NotFound,
        &["profile \"known\" version 9 not found"],
    );
    let missing = format!("sha256:{}", "0".repeat(64));
    assert_status(
        get(&mut c, "known", Digest(missing.clone())).await,
        Code::NotFound,
        &["\"known\"", &missing],
    );
    assert_status(
        get(&mut c, "known", Version(0)).await,
        Code::InvalidArgument,
        &["version 0"],
    );
    assert_status(
        get(&mut c, "known", Digest("md5:abc".into())).await,
        Code::InvalidArgument,
        &["invalid digest \"md5:abc\""],
    );
    assert_status(
        get(&mut c, "known", Latest(false)).await,
        Code::InvalidArgument,
        &["latest"],
    );
    assert_status(
        get(&mut c, "Bad Name", Latest(true)).await,
        Code::InvalidArgument,
        &["\"Bad Name\""],
    );
    assert_status(
        c.history(pb::HistoryRequest {
            name: "nope".into(),
            ..Default::default()
        })
        .await,
        Code::NotFound,
        &["profile \"nope\" not found"],
    );
    assert_status(
        c.history(pb::HistoryRequest {
            name: "known".into(),
            page_token: "zz".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["page_token"],
    );
    assert_status(
        c.list_profiles(pb::ListProfilesRequest {
            page_token: "not hex".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["page_token"],
    );
    assert_status(
        c.diff(pb::DiffRequest {
            name: "known".into(),
            from_version: 1,
            to_version: 5,
        })
        .await,
        Code::NotFound,
        &["profile \"known\" version 5 not found"],
    );
    assert_status(
        c.deprecate(pb::DeprecateRequest {
            name: "known".into(),
            version: 2,
            reason: String::new(),
        })
        .await,
        Code::NotFound,
        &["profile \"known\" version 2 not found"],
    );
    assert_status(
        c.list_audit(pb::ListAuditRequest {
            since: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: -1,
            }),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        &["timestamp"],
    );
    // Descriptions and reasons are kept with every version: bounded, and nothing stored.
    let mut req = publish_req("wordy", &good);
    req.description = "d".repeat(5000);
    assert_status(
        c.publish(req).await,
        Code::InvalidArgument,
        &["description is 5000 bytes", "limit of 4096"],
    );
    assert_status(
        get(&mut c, "wordy", Version(1)).await,
        Code::NotFound,
        &["wordy"],
    );
    assert_status(
        c.deprecate(pb::DeprecateRequest {
            name: "known".into(),
            version: 1,
            reason: "r".repeat(5000),
        })
        .await,
        Code::InvalidArgument,
        &["reason is 5000 bytes"],
    );
    let history = c
        .history(pb::HistoryRequest {
            name: "known".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        history.versions.iter().all(|v| !v.deprecated),
        "{history:?}"
    );
}

/// A small deterministic generator, so a failure reproduces.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn text(&mut self, n: usize) -> String {
        const CHARS: &[char] = &[
            'a', 'z', '0', '-', '.', '/', 'A', ' ', '\0', 'é', '\u{202e}', '{', '"', '_',
        ];
        (0..n)
            .map(|_| CHARS[(self.next() % CHARS.len() as u64) as usize])
            .collect()
    }
}

#[tokio::test]
async fn garbage_input_gets_a_status_never_a_crash() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let mut rng = XorShift(0x5eed_cafe_f00d_0001);
    for i in 0..200 {
        let len = (rng.next() % 300) as usize;
        let name = if i % 4 == 0 {
            "garbage".to_owned()
        } else {
            rng.text(len % 40)
        };
        let content = if i % 3 == 0 {
            let mut p = profile(&["read"]);
            let at = (rng.next() as usize) % p.len();
            p[at] = rng.next() as u8;
            p
        } else {
            rng.bytes(len)
        };
        let result = c.publish(publish_req(&name, &content)).await;
        if let Err(s) = &result {
            assert_ne!(s.code(), Code::Internal, "{name:?}: {s:?}");
            assert_ne!(s.code(), Code::Unknown, "{name:?}: {s:?}");
        }
        let token = rng.text(len % 20);
        for r in [
            c.history(pb::HistoryRequest {
                name: name.clone(),
                page_size: rng.next() as u32,
                page_token: token.clone(),
            })
            .await
            .err(),
            c.list_profiles(pb::ListProfilesRequest {
                page_size: rng.next() as u32,
                page_token: token.clone(),
            })
            .await
            .err(),
            c.list_audit(pb::ListAuditRequest {
                since: None,
                page_size: rng.next() as u32,
                page_token: token.clone(),
            })
            .await
            .err(),
            c.get_profile(get_req(&name, Digest(token.clone())))
                .await
                .err(),
            c.get_profile(get_req(&name, Version(rng.next())))
                .await
                .err(),
            c.diff(pb::DiffRequest {
                name: name.clone(),
                from_version: rng.next() % 3,
                to_version: rng.next(),
            })
            .await
            .err(),
            c.deprecate(pb::DeprecateRequest {
                name: name.clone(),
                version: rng.next() % 4,
                reason: token.clone(),
            })
            .await
            .err(),
            c.delete_version(pb::DeleteVersionRequest {
                name: name.clone(),
                version: rng.next(),
            })
            .await
            .err(),
            c.validate_profile(pb::ValidateProfileRequest {
                content: content.clone(),
                name: name.clone(),
            })
            .await
            .err(),
        ]
        .into_iter()
        .flatten()
        {
            assert!(
                !matches!(r.code(), Code::Internal | Code::Unknown | Code::Unavailable),
                "{name:?}: {r:?}"
            );
        }
    }
    // Still serving.
    assert!(publish(&mut c, "after", &profile(&["read"])).await.created);
}

#[tokio::test]
async fn validate_is_a_dry_run() {
    let server = Server::start().await;
    let mut c = server.client().await;
    let good = profile(&["read"]);
    let r = c
        .validate_profile(pb::ValidateProfileRequest {
            content: good.clone(),
            name: "ok".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.valid);
    assert_eq!(r.digest, sha256(&good));
    assert_eq!(r.size, good.len() as u64);
    let r = c
        .validate_profile(pb::ValidateProfileRequest {
            content: b"{}".to_vec(),
            name: "Bad/Name".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.valid);
    assert_eq!(r.diagnostics[0].code, "invalid-name");
    assert_eq!(r.diagnostics[0].path, "");
    assert!(
        r.diagnostics
            .iter()
            .any(|d| d.code == "missing-default-action")
    );
    let list = c
        .list_profiles(pb::ListProfilesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(list.profiles.is_empty(), "validation stored nothing");
    let audit = c
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(audit.entries.is_empty(), "validation is not a mutation");
}

#[tokio::test]
async fn pagination() {
    let server = Server::start().await;
    let mut c = server.client().await;
    for name in ["e", "a", "c", "b", "d"] {
        publish(&mut c, name, &profile(&["read"])).await;
    }
    for s in ["write", "close", "openat", "fstat"] {
        publish(&mut c, "a", &profile(&[s])).await;
    }
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_profiles(pb::ListProfilesRequest {
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.profiles.len() <= 2);
        names.extend(page.profiles.into_iter().map(|p| p.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(names, ["a", "b", "c", "d", "e"]);

    let mut versions = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .history(pb::HistoryRequest {
                name: "a".into(),
                page_size: 2,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        versions.extend(page.versions.into_iter().map(|v| v.version));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(versions, [5, 4, 3, 2, 1]);

    let mut entries = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_audit(pb::ListAuditRequest {
                since: None,
                page_size: 4,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        entries.extend(page.entries);
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(entries.len(), 9);
}

#[tokio::test]
async fn audit_records_every_mutation() {
    let server = Server::start().await;
    let channel = server.channel().await;
    let mut c = RegistryClient::with_interceptor(channel, |mut r: tonic::Request<()>| {
        r.metadata_mut()
            .insert("x-seccomp-actor", "alice".parse().unwrap());
        Ok(r)
    });
    let mut anon = server.client().await;
    c.publish(publish_req("aud", &profile(&["read"])))
        .await
        .unwrap();
    c.publish(publish_req("aud", &profile(&["read"])))
        .await
        .unwrap(); // unchanged
    let _ = c.publish(publish_req("aud", b"{}")).await.unwrap_err();
    let mut cas = publish_req("aud", &profile(&["write"]));
    cas.expected_latest_version = Some(5);
    let _ = c.publish(cas).await.unwrap_err();
    c.deprecate(pb::DeprecateRequest {
        name: "aud".into(),
        version: 1,
        reason: "old".into(),
    })
    .await
    .unwrap();
    let _ = anon
        .delete_version(pb::DeleteVersionRequest {
            name: "aud".into(),
            version: 9,
        })
        .await
        .unwrap_err();
    anon.delete_version(pb::DeleteVersionRequest {
        name: "aud".into(),
        version: 1,
    })
    .await
    .unwrap();

    let entries = c
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    let rows: Vec<(&str, &str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e.actor.as_str(),
                e.method.as_str(),
                e.target.as_str(),
                e.result.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("unverified:alice", "Publish", "aud@1", "OK"),
            ("unverified:alice", "Publish", "aud@1", "OK"),
            ("unverified:alice", "Publish", "aud", "INVALID_ARGUMENT"),
            ("unverified:alice", "Publish", "aud", "FAILED_PRECONDITION"),
            ("unverified:alice", "Deprecate", "aud@1", "OK"),
            ("anonymous", "DeleteVersion", "aud@9", "NOT_FOUND"),
            ("anonymous", "DeleteVersion", "aud@1", "OK"),
        ]
    );
    assert_eq!(entries[0].message, "created version 1");
    assert!(entries[1].message.contains("unchanged"), "{:?}", entries[1]);
    assert!(
        entries[2].message.contains("missing-default-action")
            || entries[2].message.contains("invalid")
    );
    assert_eq!(entries[4].message, "deprecated: old");
    let v1 = entries[0].time.unwrap();
    assert!(entries.windows(2).all(|w| {
        let (a, b) = (w[0].time.unwrap(), w[1].time.unwrap());
        (a.seconds, a.nanos) <= (b.seconds, b.nanos)
    }));

    // `since` skips older entries.
    let last = entries.last().unwrap().time.unwrap();
    let since = c
        .list_audit(pb::ListAuditRequest {
            since: Some(last),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(since.len(), 1);
    let all = c
        .list_audit(pb::ListAuditRequest {
            since: Some(v1),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(all.len(), 7);
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse,
    };

    let server = Server::start().await;
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "seccomp.registry.v1.Registry"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"seccomp.registry.v1.Registry".to_owned()),
        "{names:?}"
    );
}

#[tokio::test]
async fn shutdown_finishes_in_flight_publishes() {
    let server = Server::start().await;
    let channel = server.channel().await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let mut c = RegistryClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let content = format!("{{\"defaultAction\":\"SCMP_ACT_LOG\"{}}}", " ".repeat(t));
            c.publish(publish_req("inflight", content.as_bytes()))
                .await
                .map(|r| (r.into_inner().version, content.into_bytes()))
        }));
    }
    // Shut down while those calls are being made.
    let dir = server.stop().await;
    let mut acknowledged = Vec::new();
    for t in tasks {
        if let Ok((version, content)) = t.await.unwrap() {
            acknowledged.push((version, content));
        }
    }
    let server = Server::start_in(dir, |_| {}).await;
    let mut c = server.client().await;
    for (version, content) in &acknowledged {
        let stored = get(&mut c, "inflight", Version(*version)).await.unwrap();
        assert_eq!(&stored.content, content);
    }
}
