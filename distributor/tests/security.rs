//! The secure setup over the real servers in-process: the registry and the distributor with
//! TLS (certificates made here by a throwaway CA), bearer tokens for callers, and client
//! certificates for node agents. Anonymous calls are refused; every RPC of both services is
//! allowed or refused for every role exactly as the one rule table says; an agent is only
//! its own node; the actors recorded are the verified callers; and no token reaches a log.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use seccomp_proto::agent::v1 as agent;
use seccomp_proto::distributor::v1 as pb;
use seccomp_proto::registry::v1 as reg;
use seccomp_server::auth::{self, Access, Role};
use seccomp_server::client::{Credentials, Token, TokenSource};
use seccomp_server::pki::{Ca, PemFiles};
use seccomp_server::security::SecurityArgs;
use seccomp_server::tls::ClientTls;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

use common::{Server, distributor_with, registry_with};

const ROLES: [(&str, Role); 4] = [
    ("vic", Role::Viewer),
    ("pat", Role::Publisher),
    ("otto", Role::Operator),
    ("ada", Role::Admin),
];

fn token_of(name: &str) -> String {
    format!("{name}-token-0123456789abcdef")
}

/// Everything a logged line went to, to look for tokens in.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Setup {
    dir: tempfile::TempDir,
    ca: Ca,
    registry: Server,
    distributor: Server,
    logs: Logs,
}

impl Setup {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn caller(&self, name: Option<&str>) -> Credentials {
        Credentials {
            tls: ClientTls {
                ca: Some(self.path("ca.crt")),
                ..ClientTls::default()
            },
            token: name.map(|n| TokenSource::Value(Token::new(&token_of(n)).unwrap())),
            claimed: None,
        }
    }

    fn node(&self, files: &PemFiles) -> Credentials {
        Credentials {
            tls: ClientTls {
                ca: Some(self.path("ca.crt")),
                cert: Some(files.cert.clone()),
                key: Some(files.key.clone()),
            },
            token: None,
            claimed: None,
        }
    }

    async fn channel(&self, url: &str, credentials: &Credentials) -> Channel {
        credentials
            .endpoint(url)
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap()
    }
}

fn write_auth_file(dir: &Path, extra: &str) -> PathBuf {
    let mut text = String::new();
    for (name, role) in ROLES {
        text.push_str(&format!(
            "- name: {name}\n  token_sha256: {}\n  role: {role}\n",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token_of(name)))
        ));
    }
    text.push_str(extra);
    let path = dir.join("auth.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn setup() -> Setup {
    // Everything the services of every test here log, at every level, goes to one buffer.
    static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
    let logs = LOGS
        .get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            tracing_subscriber::fmt()
                .with_env_filter("trace")
                .with_writer(move || writer.clone())
                .init();
            logs
        })
        .clone();

    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test ca").unwrap();
    ca.write_cert(&dir.path().join("ca.crt")).unwrap();
    let server = ca
        .server(&["127.0.0.1", "localhost"])
        .unwrap()
        .write(dir.path(), "server")
        .unwrap();
    // The distributor fetches versions from the registry as the viewer "fetcher".
    let auth = write_auth_file(
        dir.path(),
        &format!(
            "- name: fetcher\n  token: {}\n  role: viewer\n- name: ci-bot\n  certificate: \"uri:spiffe://test.example/ci\"\n  role: publisher\n",
            token_of("fetcher")
        ),
    );
    std::fs::write(dir.path().join("fetcher.token"), token_of("fetcher")).unwrap();
    let args = |client_ca: bool| SecurityArgs {
        tls_cert: Some(server.cert.clone()),
        tls_key: Some(server.key.clone()),
        client_ca: client_ca.then(|| dir.path().join("ca.crt")),
        auth_tokens: Some(auth.clone()),
        trust_domain: Some("test.example".into()),
        ..SecurityArgs::default()
    };
    let registry = registry_with(&dir.path().join("registry"), |c| {
        // Client certificates too (optional: callers may use tokens).
        c.security = args(true).security().unwrap();
    })
    .await;
    let ca_path = dir.path().join("ca.crt");
    let token_file = dir.path().join("fetcher.token");
    let distributor = distributor_with(&dir.path().join("distributor"), &registry.url, |c| {
        c.security = args(true).security().unwrap();
        c.registry_credentials = Credentials {
            tls: ClientTls {
                ca: Some(ca_path),
                ..ClientTls::default()
            },
            token: Some(TokenSource::File(token_file)),
            claimed: None,
        };
    })
    .await;
    Setup {
        dir,
        ca,
        registry,
        distributor,
        logs,
    }
}

/// Call the RPC at `path` with an empty request (every field at its default) and return the
/// status code; streaming RPCs are called the same way, which is enough to see whether the
/// call got past authentication and authorization.
async fn raw_call(channel: Channel, credentials: &Credentials, path: &str) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(token) = &credentials.token {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token.token().unwrap().expose())
                .parse()
                .unwrap(),
        );
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path.to_owned()).unwrap();
    match tokio::time::timeout(Duration::from_secs(10), grpc.unary(request, path, codec)).await {
        Ok(Ok(_)) => Code::Ok,
        Ok(Err(status)) => status.code(),
        // A stream that answers nothing to an empty request got through.
        Err(_) => Code::Ok,
    }
}

/// The issue's table, written out here rather than taken from the code under test: viewer
/// reads; publisher publishes and deprecates; operator runs rollouts; admin does everything,
/// hard delete included; agents only open their stream.
const EXPECTED: &[(&str, Access)] = &[
    ("/seccomp.registry.v1.Registry/Publish", Access::Publish),
    (
        "/seccomp.registry.v1.Registry/ValidateProfile",
        Access::Read,
    ),
    ("/seccomp.registry.v1.Registry/GetProfile", Access::Read),
    ("/seccomp.registry.v1.Registry/ListProfiles", Access::Read),
    ("/seccomp.registry.v1.Registry/History", Access::Read),
    ("/seccomp.registry.v1.Registry/Diff", Access::Read),
    ("/seccomp.registry.v1.Registry/Deprecate", Access::Publish),
    ("/seccomp.registry.v1.Registry/DeleteVersion", Access::Admin),
    ("/seccomp.registry.v1.Registry/ListAudit", Access::Read),
    // #19: the compatibility rule of a profile.
    ("/seccomp.registry.v1.Registry/SetPolicy", Access::Admin),
    (
        "/seccomp.distributor.v1.Distributor/CreateRollout",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/GetRollout",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ListRollouts",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/PauseRollout",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ResumeRollout",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/AbortRollout",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/Rollback",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/WatchRollout",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ListNodes",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/RenderNci",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/PlanRollout",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/RetireNci",
        Access::Operate,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ListAudit",
        Access::Read,
    ),
    (
        "/seccomp.distributor.v1.Distributor/ListSeccompEvents",
        Access::Read,
    ),
    ("/seccomp.agent.v1.AgentSync/Sync", Access::Agent),
];

/// Whether `role` may do what `access` asks, by the issue's words.
fn expected_allowed(role: Role, access: Access) -> bool {
    match access {
        Access::Read => true,
        Access::Publish => matches!(role, Role::Publisher | Role::Admin),
        Access::Operate => matches!(role, Role::Operator | Role::Admin),
        Access::Admin => role == Role::Admin,
        Access::Agent => false,
        Access::Public | Access::Caller => true,
    }
}

#[test]
fn the_rule_table_is_the_issues_table() {
    for (path, access) in EXPECTED {
        assert_eq!(auth::rule(path), Some(*access), "{path}");
    }
    let ours = auth::RULES
        .iter()
        .filter(|(p, _)| p.starts_with("/seccomp."))
        .count();
    assert_eq!(
        ours,
        EXPECTED.len(),
        "every RPC of ours is in the expected table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_is_allowed_or_refused_per_role_as_the_table_says() {
    let s = setup().await;
    let services = [
        ("/seccomp.registry.v1.Registry/", &s.registry.url),
        ("/seccomp.distributor.v1.Distributor/", &s.distributor.url),
        ("/seccomp.agent.v1.AgentSync/", &s.distributor.url),
    ];
    let mut checked = 0;
    for (path, access) in EXPECTED {
        let Some((_, url)) = services.iter().find(|(prefix, _)| path.starts_with(prefix)) else {
            continue;
        };
        // Nobody: refused, whatever the RPC.
        let anonymous = s.caller(None);
        let code = raw_call(s.channel(url, &anonymous).await, &anonymous, path).await;
        assert_eq!(code, Code::Unauthenticated, "anonymous {path}");
        for (name, role) in ROLES {
            let credentials = s.caller(Some(name));
            let code = raw_call(s.channel(url, &credentials).await, &credentials, path).await;
            let allowed = expected_allowed(role, *access);
            if allowed {
                assert!(
                    !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
                    "{name} ({role}) {path}: {code:?}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{name} ({role}) {path}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 4 * 20, "only {checked} checks");
    // A token nobody has is refused as unauthenticated; health stays open to probes.
    let stranger = Credentials {
        token: Some(TokenSource::Value(
            Token::new("not-a-known-token-at-all").unwrap(),
        )),
        ..s.caller(None)
    };
    let code = raw_call(
        s.channel(&s.distributor.url, &stranger).await,
        &stranger,
        "/seccomp.distributor.v1.Distributor/ListRollouts",
    )
    .await;
    assert_eq!(code, Code::Unauthenticated);
    let anonymous = s.caller(None);
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        s.channel(&s.registry.url, &anonymous).await,
    );
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();

    // No token, nor its digest, in anything logged.
    let logs = String::from_utf8_lossy(&s.logs.0.lock().unwrap()).into_owned();
    assert!(logs.contains("request refused"), "refusals are logged");
    for (name, _) in ROLES {
        assert!(
            !logs.contains(&token_of(name)),
            "the token of {name} was logged"
        );
    }
    assert!(!logs.contains("not-a-known-token-at-all"));
    s.distributor.stop().await;
    s.registry.stop().await;
}

fn hello(node: &str) -> agent::AgentMessage {
    agent::AgentMessage {
        message: Some(agent::agent_message::Message::Hello(agent::Hello {
            node_name: node.into(),
            labels: [("os".to_owned(), "linux".to_owned())].into(),
            agent_version: "test".into(),
            current_revision: String::new(),
            observed: Vec::new(),
        })),
    }
}

/// Open an agent stream saying Hello as `node`; the first message, or the refusal.
async fn sync(
    channel: Channel,
    credentials: &Credentials,
    node: &str,
) -> Result<agent::DistributorMessage, tonic::Status> {
    let mut client = agent::agent_sync_client::AgentSyncClient::with_interceptor(
        channel,
        credentials.bearer().unwrap(),
    );
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tx.send(hello(node)).unwrap();
    let mut stream = client
        .sync(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    // Keep the sender alive until the first message, so the stream stays open.
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an answer in time");
    drop(tx);
    first.expect("a message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_can_only_be_its_own_node() {
    let s = setup().await;
    let a =
        s.ca.client("seccomp-agent", &["spiffe://test.example/node/node-a"])
            .unwrap()
            .write(s.dir.path(), "node-a")
            .unwrap();
    let agent_a = s.node(&a);
    let url = &s.distributor.url;

    let first = sync(s.channel(url, &agent_a).await, &agent_a, "node-a")
        .await
        .unwrap();
    assert!(matches!(
        first.message,
        Some(agent::distributor_message::Message::Desired(_))
    ));

    let err = sync(s.channel(url, &agent_a).await, &agent_a, "node-b")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("node-b"), "{}", err.message());
    // And the distributor's audit log says who tried.
    let ada = s.caller(Some("ada"));
    let mut admin = pb::distributor_client::DistributorClient::with_interceptor(
        s.channel(url, &ada).await,
        ada.bearer().unwrap(),
    );
    let entries = admin
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        entries.iter().any(|e| e.actor == "node:node-a"
            && e.method == "/seccomp.agent.v1.AgentSync/Sync"
            && e.result == "PERMISSION_DENIED"),
        "{entries:?}"
    );

    // The kubelet-style CN names a node too.
    let b =
        s.ca.client("system:node:node-b", &[])
            .unwrap()
            .write(s.dir.path(), "node-b")
            .unwrap();
    let agent_b = s.node(&b);
    sync(s.channel(url, &agent_b).await, &agent_b, "node-b")
        .await
        .unwrap();

    // A caller, even an admin, cannot open an agent stream; an agent cannot call the API.
    let ada = s.caller(Some("ada"));
    let err = sync(s.channel(url, &ada).await, &ada, "node-a")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let mut api = pb::distributor_client::DistributorClient::new(s.channel(url, &agent_a).await);
    let err = api
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A certificate from another CA does not get through the handshake.
    let other = Ca::new("other ca").unwrap();
    let stranger = other
        .client("seccomp-agent", &["spiffe://test.example/node/node-a"])
        .unwrap()
        .write(s.dir.path(), "stranger")
        .unwrap();
    let endpoint = s.node(&stranger).endpoint(url).unwrap();
    let refused = match endpoint.connect().await {
        Err(_) => true,
        Ok(channel) => sync(channel, &s.node(&stranger), "node-a").await.is_err(),
    };
    assert!(refused, "a certificate of another CA was accepted");
    s.distributor.stop().await;
    s.registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_actors_are_the_verified_callers() {
    let s = setup().await;
    let pat = s.caller(Some("pat"));
    let mut registry = reg::registry_client::RegistryClient::with_interceptor(
        s.channel(&s.registry.url, &pat).await,
        pat.bearer().unwrap(),
    );
    registry
        .publish(reg::PublishRequest {
            name: "web".into(),
            content: br#"{"defaultAction":"SCMP_ACT_LOG"}"#.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let stored = registry
        .get_profile(reg::GetProfileRequest {
            name: "web".into(),
            selector: Some(reg::get_profile_request::Selector::Version(1)),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .profile
        .unwrap();
    assert_eq!(stored.author, "pat");

    // A claimed name means nothing once callers are authenticated.
    let otto = s.caller(Some("otto"));
    let mut distributor = pb::distributor_client::DistributorClient::with_interceptor(
        s.channel(&s.distributor.url, &otto).await,
        otto.bearer().unwrap(),
    );
    let mut request = tonic::Request::new(pb::CreateRolloutRequest {
        profile: "web".into(),
        target: Some(pb::Target {
            selector: [("os".to_owned(), "linux".to_owned())].into(),
            ..Default::default()
        }),
        allow_empty: true,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert(auth::CLAIMED_ACTOR, "mallory".parse().unwrap());
    let rollout = distributor
        .create_rollout(request)
        .await
        .unwrap()
        .into_inner()
        .rollout
        .unwrap();
    assert_eq!(rollout.created_by, "otto");
    // The distributor's audit log names him too, and a refused anonymous pause.
    let mut nobody = pb::distributor_client::DistributorClient::new(
        s.channel(&s.distributor.url, &s.caller(None)).await,
    );
    let err = nobody
        .pause_rollout(pb::PauseRolloutRequest {
            id: rollout.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let vic = s.caller(Some("vic"));
    let mut viewer = pb::distributor_client::DistributorClient::with_interceptor(
        s.channel(&s.distributor.url, &vic).await,
        vic.bearer().unwrap(),
    );
    let entries = viewer
        .list_audit(pb::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        entries.iter().any(|e| e.actor == "otto"
            && e.method == "CreateRollout"
            && e.target == rollout.id
            && e.result == "OK"),
        "{entries:?}"
    );
    assert!(
        entries.iter().any(|e| e.actor == "unauthenticated"
            && e.method == "PauseRollout"
            && e.result == "UNAUTHENTICATED"),
        "{entries:?}"
    );

    // The registry's audit log names the publisher, and the refusal of an anonymous call.
    let anonymous = s.caller(None);
    let mut nobody =
        reg::registry_client::RegistryClient::new(s.channel(&s.registry.url, &anonymous).await);
    let err = nobody
        .deprecate(reg::DeprecateRequest {
            name: "web".into(),
            version: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let ada = s.caller(Some("ada"));
    let mut admin = reg::registry_client::RegistryClient::with_interceptor(
        s.channel(&s.registry.url, &ada).await,
        ada.bearer().unwrap(),
    );
    let entries = admin
        .list_audit(reg::ListAuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        entries
            .iter()
            .any(|e| e.actor == "pat" && e.method == "Publish"),
        "{entries:?}"
    );
    assert!(
        entries.iter().any(|e| e.actor == "unauthenticated"
            && e.method == "Deprecate"
            && e.result == "UNAUTHENTICATED"),
        "{entries:?}"
    );
    s.distributor.stop().await;
    s.registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_a_caller_with_the_role_the_auth_file_gives_it() {
    let s = setup().await;
    let files =
        s.ca.client("ci-bot", &["spiffe://test.example/ci"])
            .unwrap()
            .write(s.dir.path(), "ci-bot")
            .unwrap();
    let ci = s.node(&files);
    let mut registry =
        reg::registry_client::RegistryClient::new(s.channel(&s.registry.url, &ci).await);
    registry
        .publish(reg::PublishRequest {
            name: "ci-made".into(),
            content: br#"{"defaultAction":"SCMP_ACT_LOG"}"#.to_vec(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = registry
        .delete_version(reg::DeleteVersionRequest {
            name: "ci-made".into(),
            version: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("ci-bot (publisher)"),
        "{}",
        err.message()
    );

    // A certificate the auth file does not name is nobody.
    let stranger =
        s.ca.client("someone", &["spiffe://test.example/someone"])
            .unwrap()
            .write(s.dir.path(), "someone")
            .unwrap();
    let nobody = s.node(&stranger);
    let mut registry =
        reg::registry_client::RegistryClient::new(s.channel(&s.registry.url, &nobody).await);
    let err = registry
        .list_profiles(reg::ListProfilesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("URI:spiffe://test.example/someone"),
        "{}",
        err.message()
    );
    s.distributor.stop().await;
    s.registry.stop().await;
}
