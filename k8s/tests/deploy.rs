//! The Kubernetes manifests in `deploy/`, as `kubectl kustomize` renders the base
//! (`deploy/`) and the example overlay with every component (`deploy/overlays/example`).
//!
//! Every rendered object is parsed strictly into its `k8s-openapi` type: k8s-openapi
//! ignores fields it does not know, so each typed object is serialized again and every key
//! of the rendered document must come back (a typo such as `readOnlyRootFilesytem` would
//! otherwise pass silently, and the setting with it). Kinds without a k8s-openapi type
//! (cert-manager's Issuer and Certificate, the Prometheus Operator's ServiceMonitor and
//! PodMonitor) are checked as JSON, field by field; any other kind fails the test.
//!
//! Then the invariants deploy/README.md promises: every container has a read-only root,
//! no privilege escalation, ALL capabilities dropped (only the agent adds CHOWN, FOWNER and
//! DAC_OVERRIDE), RuntimeDefault seccomp, requests and limits, a metrics listener
//! (`--metrics-listen`) on its `metrics` port with `httpGet` probes there (`/healthz` for
//! liveness, `/readyz` for readiness); the services run as a fixed non-root user; the
//! agent mounts exactly its host paths (`/etc/passwd` and `/etc/group` read-only, never
//! `/`), takes `NODE_NAME` from `spec.nodeName` and reports no labels while the distributor
//! watches Node objects; RBAC grants each ServiceAccount exactly what its flags use;
//! NetworkPolicies isolate every workload and admit only the expected peers (Prometheus
//! exactly to the ports the ServiceMonitors and the PodMonitor scrape, each the port of a
//! `*_METRICS_LISTEN`); every environment variable is one a flag of that program reads,
//! and every file it names lies on a mounted volume; the services' auth files, read by the
//! services' own parser, let each service call the other as a viewer and the agents in as
//! nodes. A last test makes sure the strict parse does reject a typo.
//!
//! The Grafana dashboard (`deploy/grafana/seccomp.json`, not rendered by kustomize) is read
//! as JSON: every metric its queries select is one the programs export ([`METRICS`], each
//! checked against the source file that registers it), and each of those is queried.
//!
//! Without `kubectl` on PATH the tests say so on stderr and pass without checking.

#![allow(clippy::unwrap_used)] // a test may panic on what it did not expect

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Secret, Service, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::serde::de::DeserializeOwned;
use k8s_openapi::serde::{Deserialize, Serialize};
use seccomp_server::auth::{self, Authenticator, BoxFuture, Identities, Principal, Reviewed};
use serde_json::Value;

const NAMESPACE: &str = "seccomp-system";
const REGISTRY: &str = "seccomp-registry";
const DISTRIBUTOR: &str = "seccomp-distributor";
const AGENT: &str = "seccomp-node-agent";
/// The image every container runs (any tag or digest).
const IMAGE: &str = "ghcr.io/seccomp-distribution/seccomp";
/// The label of API clients' pods, in any namespace.
const CLIENT_LABEL: (&str, &str) = ("seccomp.dev/client", "true");
/// The capabilities the agent keeps, and nothing else does (deploy/README.md says why).
const AGENT_CAPABILITIES: [&str; 3] = ["CHOWN", "DAC_OVERRIDE", "FOWNER"];
/// The host paths the agent may mount, with their hostPath type and where they appear in
/// the container (`None`: the agent's state directory, wherever --state-dir says).
const AGENT_HOST_PATHS: [(&str, &str, Option<&str>, bool); 4] = [
    (
        "/var/lib/kubelet/seccomp",
        "DirectoryOrCreate",
        Some("/host/var/lib/kubelet/seccomp"),
        false,
    ),
    ("/etc/passwd", "File", Some("/host/etc/passwd"), true),
    ("/etc/group", "File", Some("/host/etc/group"), true),
    (
        "/var/lib/seccomp-node-agent",
        "DirectoryOrCreate",
        None,
        false,
    ),
];
/// The host paths the agent mounts besides, read-only, only when it follows logs for
/// seccomp records (`--audit-log`, the seccomp-events component): the logs, and /proc for
/// the recorded pids' containers.
const AGENT_EVENT_PATHS: [(&str, &str, Option<&str>, bool); 2] = [
    ("/var/log", "Directory", Some("/host/var/log"), true),
    ("/proc", "Directory", Some("/host/proc"), true),
];
/// The longest a projected token may live (kubelet renews it at 80%).
const MAX_TOKEN_SECONDS: i64 = 3600;

// ---------------------------------------------------------------------------------------
// Rendering and strict parsing.

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// `kubectl kustomize <dir>` (relative to the repository), or `None` with a message when
/// kubectl is not installed.
fn render(dir: &str) -> Option<String> {
    let out = match Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join(dir))
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Straight to stderr, not through eprintln!, which the test harness captures
            // and shows only for failing tests: a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: kubectl is not on PATH, so {dir} is not rendered or checked \
                 (install kubectl, which includes kustomize, to run this test)"
            );
            return None;
        }
        Err(e) => panic!("cannot run kubectl kustomize {dir}: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8(out.stdout).unwrap())
}

/// The documents of a YAML stream, as JSON values (empty documents dropped).
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|doc| !doc.is_null())
        .collect()
}

/// `doc` as a `T`, refusing every field `T` does not know: the typed object, serialized
/// again, must hold every key of `doc` (with an equal value at each leaf).
fn strict<T: DeserializeOwned + Serialize>(doc: &Value, what: &str) -> Result<T, String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| format!("{what}: {e}"))?;
    let back = serde_json::to_value(&typed).unwrap();
    let mut lost = Vec::new();
    lost_fields(doc, &back, "", &mut lost);
    if lost.is_empty() {
        Ok(typed)
    } else {
        Err(format!(
            "{what}: fields its type does not know (a typo?): {}",
            lost.join(", ")
        ))
    }
}

/// The key paths of `original` that `back` does not have. A null is an absent field (as
/// Kubernetes treats it); leaves must be equal.
fn lost_fields(original: &Value, back: &Value, path: &str, lost: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(fields), Value::Object(kept)) => {
            for (key, value) in fields {
                let at = format!("{path}.{key}");
                match kept.get(key) {
                    _ if value.is_null() => {}
                    Some(v) => lost_fields(value, v, &at, lost),
                    None => lost.push(at),
                }
            }
        }
        (Value::Array(items), Value::Array(kept)) => {
            for (i, item) in items.iter().enumerate() {
                let at = format!("{path}[{i}]");
                match kept.get(i) {
                    Some(v) => lost_fields(item, v, &at, lost),
                    None => lost.push(at),
                }
            }
        }
        (a, b) if a == b => {}
        (a, b) => lost.push(format!("{path} ({a} came back as {b})")),
    }
}

/// A Secret with its `data` values' line breaks removed: kustomize wraps long base64 values,
/// which the API server (Go's base64) reads as if unwrapped, and k8s-openapi refuses.
fn unwrapped_data(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(data) = doc.get_mut("data").and_then(Value::as_object_mut) {
        for value in data.values_mut() {
            if let Some(text) = value.as_str() {
                *value = Value::String(text.replace(['\n', '\r'], ""));
            }
        }
    }
    doc
}

fn parse<T: DeserializeOwned + Serialize>(doc: &Value, what: &str) -> T {
    strict(doc, what).unwrap_or_else(|e| panic!("{e}"))
}

/// A custom resource checked as JSON: only `allowed` keys at each of the given pointers
/// (`""` is the document), so a typo there fails as it would in a typed object.
fn custom(doc: &Value, what: &str, allowed: &[(&str, &[&str])]) -> Value {
    for (pointer, keys) in allowed {
        let Some(value) = doc.pointer(pointer) else {
            continue;
        };
        let object = value
            .as_object()
            .unwrap_or_else(|| panic!("{what}: {pointer} is not an object"));
        for key in object.keys() {
            assert!(
                keys.contains(&key.as_str()),
                "{what}: unknown field {pointer}/{key} (known here: {keys:?})"
            );
        }
    }
    doc.clone()
}

const METADATA_KEYS: &[&str] = &["name", "namespace", "labels", "annotations"];

const TOP_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];

/// A ServiceMonitor or PodMonitor checked as JSON; `endpoints` is the key of its list of
/// scrape endpoints (`endpoints`, `podMetricsEndpoints`).
fn monitor(doc: &Value, what: &str, endpoints: &str) -> Value {
    let doc = custom(
        doc,
        what,
        &[
            ("", TOP_KEYS),
            ("/metadata", METADATA_KEYS),
            ("/spec", &["selector", "namespaceSelector", endpoints]),
            ("/spec/selector", &["matchLabels"]),
            ("/spec/namespaceSelector", &["matchNames"]),
        ],
    );
    let pointer = format!("/spec/{endpoints}");
    for (i, endpoint) in json_array(&doc, &pointer, what).iter().enumerate() {
        let at = format!("{what} spec.{endpoints}[{i}]");
        custom(
            endpoint,
            &at,
            &[("", &["port", "path", "scheme", "interval", "relabelings"])],
        );
        if endpoint.get("relabelings").is_some() {
            for (j, relabeling) in json_array(endpoint, "/relabelings", &at).iter().enumerate() {
                custom(
                    relabeling,
                    &format!("{at}.relabelings[{j}]"),
                    &[(
                        "",
                        &[
                            "sourceLabels",
                            "separator",
                            "targetLabel",
                            "regex",
                            "replacement",
                            "action",
                        ],
                    )],
                );
            }
        }
    }
    doc
}

/// Everything one rendering holds, by kind.
#[derive(Default)]
struct Rendered {
    source: String,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    services: Vec<Service>,
    stateful_sets: Vec<StatefulSet>,
    daemon_sets: Vec<DaemonSet>,
    disruption_budgets: Vec<PodDisruptionBudget>,
    network_policies: Vec<NetworkPolicy>,
    secrets: Vec<Secret>,
    config_maps: Vec<ConfigMap>,
    crds: Vec<CustomResourceDefinition>,
    /// cert-manager.io/v1 Issuer.
    issuers: Vec<Value>,
    /// cert-manager.io/v1 Certificate.
    certificates: Vec<Value>,
    /// monitoring.coreos.com/v1 ServiceMonitor.
    service_monitors: Vec<Value>,
    /// monitoring.coreos.com/v1 PodMonitor.
    pod_monitors: Vec<Value>,
}

impl Rendered {
    fn parse(source: &str, yaml: &str) -> Self {
        let mut r = Rendered {
            source: source.to_owned(),
            ..Rendered::default()
        };
        let docs = documents(yaml);
        assert!(!docs.is_empty(), "{source} renders nothing");
        for doc in &docs {
            let api_version = doc["apiVersion"].as_str().unwrap_or_default();
            let kind = doc["kind"].as_str().unwrap_or_default();
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            let what = format!("{source}: {kind} {name:?}");
            match (api_version, kind) {
                ("v1", "Namespace") => r.namespaces.push(parse(doc, &what)),
                ("v1", "ServiceAccount") => r.service_accounts.push(parse(doc, &what)),
                ("v1", "Service") => r.services.push(parse(doc, &what)),
                ("v1", "Secret") => r.secrets.push(parse(&unwrapped_data(doc), &what)),
                ("v1", "ConfigMap") => r.config_maps.push(parse(doc, &what)),
                ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                    r.cluster_roles.push(parse(doc, &what))
                }
                ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                    r.cluster_role_bindings.push(parse(doc, &what))
                }
                ("rbac.authorization.k8s.io/v1", "Role") => r.roles.push(parse(doc, &what)),
                ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                    r.role_bindings.push(parse(doc, &what))
                }
                ("apps/v1", "StatefulSet") => r.stateful_sets.push(parse(doc, &what)),
                ("apps/v1", "DaemonSet") => r.daemon_sets.push(parse(doc, &what)),
                ("policy/v1", "PodDisruptionBudget") => {
                    r.disruption_budgets.push(parse(doc, &what))
                }
                ("networking.k8s.io/v1", "NetworkPolicy") => {
                    r.network_policies.push(parse(doc, &what))
                }
                ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
                    r.crds.push(parse(doc, &what))
                }
                ("cert-manager.io/v1", "Issuer") => r.issuers.push(custom(
                    doc,
                    &what,
                    &[
                        ("", TOP_KEYS),
                        ("/metadata", METADATA_KEYS),
                        ("/spec", &["selfSigned", "ca"]),
                        ("/spec/selfSigned", &[]),
                        ("/spec/ca", &["secretName"]),
                    ],
                )),
                ("cert-manager.io/v1", "Certificate") => r.certificates.push(custom(
                    doc,
                    &what,
                    &[
                        ("", TOP_KEYS),
                        ("/metadata", METADATA_KEYS),
                        (
                            "/spec",
                            &[
                                "isCA",
                                "commonName",
                                "secretName",
                                "duration",
                                "renewBefore",
                                "privateKey",
                                "usages",
                                "dnsNames",
                                "issuerRef",
                            ],
                        ),
                        (
                            "/spec/privateKey",
                            &["algorithm", "size", "rotationPolicy", "encoding"],
                        ),
                        ("/spec/issuerRef", &["name", "kind", "group"]),
                    ],
                )),
                ("monitoring.coreos.com/v1", "ServiceMonitor") => {
                    r.service_monitors.push(monitor(doc, &what, "endpoints"))
                }
                ("monitoring.coreos.com/v1", "PodMonitor") => {
                    r.pod_monitors
                        .push(monitor(doc, &what, "podMetricsEndpoints"))
                }
                _ => panic!(
                    "{what}: {api_version} {kind} has no strict check in this test; \
                     parse it into its k8s-openapi type (or check it as JSON) here"
                ),
            }
        }
        r
    }

    /// The pod-owning objects: (kind, name, pod labels, pod spec).
    fn workloads(&self) -> Vec<Workload<'_>> {
        let mut out = Vec::new();
        for s in &self.stateful_sets {
            let spec = s.spec.as_ref().unwrap();
            out.push(Workload {
                what: format!("{}: StatefulSet {:?}", self.source, name(&s.metadata)),
                name: name(&s.metadata),
                labels: pod_labels(&spec.template.metadata),
                pod: spec.template.spec.as_ref().unwrap(),
                claims: spec
                    .volume_claim_templates
                    .iter()
                    .flatten()
                    .map(|c| name(&c.metadata).to_owned())
                    .collect(),
            });
        }
        for d in &self.daemon_sets {
            let spec = d.spec.as_ref().unwrap();
            out.push(Workload {
                what: format!("{}: DaemonSet {:?}", self.source, name(&d.metadata)),
                name: name(&d.metadata),
                labels: pod_labels(&spec.template.metadata),
                pod: spec.template.spec.as_ref().unwrap(),
                claims: BTreeSet::new(),
            });
        }
        out
    }

    fn workload(&self, wanted: &str) -> Workload<'_> {
        self.workloads()
            .into_iter()
            .find(|w| w.name == wanted)
            .unwrap_or_else(|| panic!("{}: no workload {wanted:?}", self.source))
    }

    fn service(&self, wanted: &str) -> &Service {
        self.services
            .iter()
            .find(|s| name(&s.metadata) == wanted)
            .unwrap_or_else(|| panic!("{}: no Service {wanted:?}", self.source))
    }
}

struct Workload<'a> {
    /// For messages: where it comes from, its kind and name.
    what: String,
    name: &'a str,
    labels: BTreeMap<String, String>,
    pod: &'a PodSpec,
    /// The names of its volumeClaimTemplates.
    claims: BTreeSet<String>,
}

impl Workload<'_> {
    /// Its one container (every workload here has exactly one).
    fn container(&self) -> &Container {
        assert_eq!(
            self.pod.containers.len(),
            1,
            "{}: one container expected",
            self.what
        );
        &self.pod.containers[0]
    }

    /// The value of the container's environment variable `var`.
    fn env(&self, var: &str) -> Option<&str> {
        self.container()
            .env
            .iter()
            .flatten()
            .find(|e| e.name == var)
            .map(|e| {
                e.value
                    .as_deref()
                    .unwrap_or_else(|| panic!("{}: {var} has no literal value", self.what))
            })
    }

    fn required_env(&self, var: &str) -> &str {
        self.env(var)
            .unwrap_or_else(|| panic!("{}: environment variable {var} is not set", self.what))
    }

    /// The mount that `path` lies on (the deepest), and its volume (`None` for a volume
    /// claim template).
    fn mount_of(&self, path: &str) -> Option<(&VolumeMount, Option<&Volume>)> {
        let mount = self
            .container()
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| path == m.mount_path || path.starts_with(&format!("{}/", m.mount_path)))
            .max_by_key(|m| m.mount_path.len())?;
        let volume = self
            .pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name);
        Some((mount, volume))
    }

    /// The volume `var`'s file lies on (it must lie on one).
    fn volume_of(&self, var: &str) -> &Volume {
        let path = self.required_env(var);
        match self.mount_of(path) {
            Some((_, Some(volume))) => volume,
            _ => panic!(
                "{}: {var}={path} lies on no pod volume (a volume claim or nothing)",
                self.what
            ),
        }
    }

    /// The port number of the container port `port_name`.
    fn port(&self, port_name: &str) -> i32 {
        self.container()
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(port_name))
            .unwrap_or_else(|| panic!("{}: no container port named {port_name:?}", self.what))
            .container_port
    }
}

fn name(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn pod_labels(
    meta: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
) -> BTreeMap<String, String> {
    meta.as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn json_array<'a>(doc: &'a Value, pointer: &str, what: &str) -> &'a Vec<Value> {
    doc.pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("{what}: {pointer} is not a list"))
}

fn json_str<'a>(doc: &'a Value, pointer: &str, what: &str) -> &'a str {
    doc.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{what}: {pointer} is not a string"))
}

/// The match labels of a selector that uses nothing else.
fn match_labels(selector: &LabelSelector, what: &str) -> BTreeMap<String, String> {
    assert!(
        selector.match_expressions.is_none(),
        "{what}: matchExpressions are not expected"
    );
    selector.match_labels.clone().unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

// ---------------------------------------------------------------------------------------
// The checks.

/// Every check that holds for the base and every overlay alike.
fn check_all(r: &Rendered) {
    let names: BTreeSet<&str> = r.workloads().iter().map(|w| w.name).collect();
    assert_eq!(
        names,
        BTreeSet::from([REGISTRY, DISTRIBUTOR, AGENT]),
        "{}: the workloads",
        r.source
    );
    check_namespaces(r);
    for w in r.workloads() {
        check_pod_security(&w);
        check_environment(&w);
        check_metrics_and_probes(&w);
    }
    check_agent(r);
    check_service(r, REGISTRY);
    check_service(r, DISTRIBUTOR);
    check_calls_between_services(r);
    check_rbac(r);
    check_services_and_budgets(r);
    let scraped = check_monitors(r);
    check_network_policies(r, &scraped);
    check_crd(r);
}

/// One namespace, and everything namespaced is in it.
fn check_namespaces(r: &Rendered) {
    assert_eq!(r.namespaces.len(), 1, "{}: one Namespace", r.source);
    let ns = &r.namespaces[0];
    assert_eq!(name(&ns.metadata), NAMESPACE);
    // The agent's hostPaths need the "privileged" Pod Security level; nothing looser than
    // what the label says may be assumed elsewhere.
    assert_eq!(
        ns.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-security.kubernetes.io/enforce"))
            .map(String::as_str),
        Some("privileged"),
        "{}: Namespace {NAMESPACE} label pod-security.kubernetes.io/enforce",
        r.source
    );
    let namespaced = r
        .service_accounts
        .iter()
        .map(|o| ("ServiceAccount", &o.metadata))
        .chain(r.roles.iter().map(|o| ("Role", &o.metadata)))
        .chain(r.role_bindings.iter().map(|o| ("RoleBinding", &o.metadata)))
        .chain(r.services.iter().map(|o| ("Service", &o.metadata)))
        .chain(r.stateful_sets.iter().map(|o| ("StatefulSet", &o.metadata)))
        .chain(r.daemon_sets.iter().map(|o| ("DaemonSet", &o.metadata)))
        .chain(
            r.disruption_budgets
                .iter()
                .map(|o| ("PodDisruptionBudget", &o.metadata)),
        )
        .chain(
            r.network_policies
                .iter()
                .map(|o| ("NetworkPolicy", &o.metadata)),
        )
        .chain(r.secrets.iter().map(|o| ("Secret", &o.metadata)))
        .chain(r.config_maps.iter().map(|o| ("ConfigMap", &o.metadata)));
    for (kind, meta) in namespaced {
        assert_eq!(
            meta.namespace.as_deref(),
            Some(NAMESPACE),
            "{}: {kind} {:?} metadata.namespace",
            r.source,
            name(meta)
        );
    }
    for doc in r
        .issuers
        .iter()
        .chain(&r.certificates)
        .chain(&r.service_monitors)
        .chain(&r.pod_monitors)
    {
        assert_eq!(
            doc["metadata"]["namespace"], NAMESPACE,
            "{}: {} {} metadata.namespace",
            r.source, doc["kind"], doc["metadata"]["name"]
        );
    }
}

/// The container and pod security settings of one workload.
fn check_pod_security(w: &Workload<'_>) {
    let agent = w.name == AGENT;
    let pod = w.pod;
    let pod_sc = pod.security_context.clone().unwrap_or_default();
    for (field, value) in [
        ("hostNetwork", pod.host_network),
        ("hostPID", pod.host_pid),
        ("hostIPC", pod.host_ipc),
    ] {
        assert_ne!(value, Some(true), "{}: spec.{field}", w.what);
    }
    // Services of the namespace would otherwise add SECCOMP_DISTRIBUTOR_PORT=tcp://... and
    // the like, next to our flags' variables.
    assert_eq!(
        pod.enable_service_links,
        Some(false),
        "{}: spec.enableServiceLinks",
        w.what
    );
    assert!(
        pod.init_containers.is_none() && pod.ephemeral_containers.is_none(),
        "{}: no init or ephemeral containers expected",
        w.what
    );
    for c in &pod.containers {
        let what = format!("{} container {:?}", w.what, c.name);
        let image = c.image.as_deref().unwrap_or_default();
        assert!(
            image.starts_with(&format!("{IMAGE}:")) || image.starts_with(&format!("{IMAGE}@")),
            "{what}: image {image:?} is not {IMAGE}"
        );
        let sc = c
            .security_context
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no securityContext"));
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(true),
            "{what}: securityContext.readOnlyRootFilesystem"
        );
        assert_eq!(
            sc.allow_privilege_escalation,
            Some(false),
            "{what}: securityContext.allowPrivilegeEscalation"
        );
        assert_ne!(
            sc.privileged,
            Some(true),
            "{what}: securityContext.privileged"
        );
        let caps = sc
            .capabilities
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: securityContext.capabilities"));
        assert_eq!(
            caps.drop.as_deref(),
            Some(&["ALL".to_owned()][..]),
            "{what}: securityContext.capabilities.drop"
        );
        let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
        let allowed: BTreeSet<&str> = if agent {
            AGENT_CAPABILITIES.into_iter().collect()
        } else {
            BTreeSet::new()
        };
        assert_eq!(added, allowed, "{what}: securityContext.capabilities.add");
        // The container's own profile wins over the pod's.
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .or(pod_sc.seccomp_profile.as_ref())
            .unwrap_or_else(|| panic!("{what}: no seccompProfile on the container or pod"));
        assert_eq!(
            seccomp.type_, "RuntimeDefault",
            "{what}: seccompProfile.type"
        );
        let run_as_user = sc.run_as_user.or(pod_sc.run_as_user);
        let run_as_non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root);
        if agent {
            assert_eq!(run_as_user, Some(0), "{what}: the agent runs as root");
        } else {
            assert_eq!(run_as_non_root, Some(true), "{what}: runAsNonRoot");
            assert!(
                matches!(run_as_user, Some(uid) if uid > 0),
                "{what}: runAsUser must be a fixed non-root uid, is {run_as_user:?}"
            );
            assert!(
                matches!(pod_sc.fs_group, Some(gid) if gid > 0),
                "{what}: spec.securityContext.fsGroup (the volume must be writable)"
            );
        }
        let resources = c
            .resources
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no resources"));
        for (kind, list) in [
            ("requests", &resources.requests),
            ("limits", &resources.limits),
        ] {
            for resource in ["cpu", "memory"] {
                assert!(
                    list.as_ref().is_some_and(|l| l.contains_key(resource)),
                    "{what}: resources.{kind}.{resource}"
                );
            }
        }
    }
}

/// The environment variable of a program's `--metrics-listen`.
fn metrics_listen_var(workload: &str) -> &'static str {
    match workload {
        REGISTRY => "SECCOMP_REGISTRY_METRICS_LISTEN",
        DISTRIBUTOR => "SECCOMP_DISTRIBUTOR_METRICS_LISTEN",
        AGENT => "SECCOMP_AGENT_METRICS_LISTEN",
        other => panic!("no metrics listener known for {other:?}"),
    }
}

/// The container port (by name) that a workload's `--metrics-listen` binds, on every
/// address of the pod; panics, naming the workload and field, when it binds none.
fn metrics_port_name(w: &Workload<'_>) -> String {
    let var = metrics_listen_var(w.name);
    let value = w.required_env(var);
    let addr: std::net::SocketAddr = value
        .parse()
        .unwrap_or_else(|e| panic!("{}: env {var}={value:?} is no address: {e}", w.what));
    assert!(
        addr.ip().is_unspecified(),
        "{}: env {var}={value}: must bind every address (0.0.0.0 or [::]), or kubelet and \
         Prometheus cannot reach it on the pod's IP",
        w.what
    );
    let ports: Vec<&str> = w
        .container()
        .ports
        .iter()
        .flatten()
        .filter(|p| p.container_port == i32::from(addr.port()))
        .map(|p| p.name.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(
        ports,
        ["metrics"],
        "{}: env {var}={value}: its port is the container port named \"metrics\" (ports[].name)",
        w.what
    );
    ports[0].to_owned()
}

/// Every container listens on its `metrics` port (`--metrics-listen`, plain HTTP) and is
/// probed there: liveness `GET /healthz` (the process runs), readiness `GET /readyz` (it
/// serves; the agent: its stream is up). Never liveness on /readyz, which would restart
/// agents while the distributor is away.
fn check_metrics_and_probes(w: &Workload<'_>) {
    let port = metrics_port_name(w);
    let c = w.container();
    let what = format!("{} container {:?}", w.what, c.name);
    for (probe, value, path) in [
        ("livenessProbe", &c.liveness_probe, "/healthz"),
        ("readinessProbe", &c.readiness_probe, "/readyz"),
    ] {
        let value = value
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no {probe}"));
        assert!(
            value.tcp_socket.is_none() && value.exec.is_none() && value.grpc.is_none(),
            "{what}: {probe}: only httpGet is expected"
        );
        let get = value
            .http_get
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: {probe}.httpGet is missing"));
        assert_eq!(
            get.port,
            IntOrString::String(port.clone()),
            "{what}: {probe}.httpGet.port (the metrics listener, by name)"
        );
        assert_eq!(
            get.path.as_deref(),
            Some(path),
            "{what}: {probe}.httpGet.path"
        );
        assert!(
            get.scheme.as_deref().is_none_or(|s| s == "HTTP"),
            "{what}: {probe}.httpGet.scheme (the metrics listener has no TLS)"
        );
        assert!(
            get.host.is_none(),
            "{what}: {probe}.httpGet.host (the pod's own IP, not another host)"
        );
    }
    assert!(
        c.startup_probe.is_none(),
        "{what}: startupProbe is not expected (deploy/README.md, \"Probes\")"
    );
}

/// The source files whose clap flags a program reads: its own `main.rs` and the flags it
/// flattens in from seccomp-server.
fn flag_sources(program: &str) -> Vec<&'static str> {
    const SERVER: [&str; 4] = [
        "server/src/security.rs",
        "server/src/grpc.rs",
        "server/src/retention.rs",
        "server/src/telemetry.rs",
    ];
    let mut files = match program {
        "seccomp-registry" => vec!["registry/src/main.rs"],
        "seccomp-distributor" => vec!["distributor/src/main.rs"],
        "seccomp-node-agent" => return vec!["node-agent/src/main.rs", "server/src/telemetry.rs"],
        other => panic!("no flag sources known for the program {other:?}"),
    };
    files.extend(SERVER);
    files
}

/// The environment variables `program` reads: `RUST_LOG` and every `env = "..."` of its
/// clap flags.
fn flag_variables(program: &str) -> BTreeSet<String> {
    let mut vars = BTreeSet::from(["RUST_LOG".to_owned()]);
    for file in flag_sources(program) {
        let text = std::fs::read_to_string(repo().join(file)).unwrap_or_else(|e| {
            panic!("{file} (where {program}'s flags are; update flag_sources): {e}")
        });
        for piece in text.split("env = \"").skip(1) {
            vars.insert(piece.split('"').next().unwrap().to_owned());
        }
    }
    assert!(vars.len() > 5, "{program}: found only {vars:?}");
    vars
}

/// Every variable a container sets is one its program reads (a misspelt one would be
/// ignored, and the flag left at its default), and every absolute path it names lies on a
/// volume.
fn check_environment(w: &Workload<'_>) {
    let c = w.container();
    let command = c
        .command
        .as_ref()
        .unwrap_or_else(|| panic!("{}: no command", w.what));
    let program = command[0].rsplit('/').next().unwrap();
    let known = flag_variables(program);
    let mut seen = BTreeSet::new();
    for e in c.env.iter().flatten() {
        assert!(
            known.contains(&e.name),
            "{}: {program} reads no variable {} (its flags read {known:?})",
            w.what,
            e.name
        );
        assert!(seen.insert(&e.name), "{}: {} set twice", w.what, e.name);
        let Some(value) = e.value.as_deref() else {
            continue;
        };
        // Node paths, under the host root, each on a mount of the host's.
        if e.name == "SECCOMP_AGENT_AUDIT_LOGS" {
            let root = w.required_env("SECCOMP_AGENT_HOST_ROOT");
            for log in value.split(',') {
                assert!(
                    w.mount_of(&format!("{root}{log}")).is_some(),
                    "{}: {}: {log} is on no host path mounted under {root}",
                    w.what,
                    e.name
                );
            }
            continue;
        }
        // The host root itself is no mount: the host paths below it are.
        if value.starts_with('/') && e.name != "SECCOMP_AGENT_HOST_ROOT" {
            assert!(
                w.mount_of(value).is_some(),
                "{}: {}={value} lies on no mounted volume (the root file system is read-only)",
                w.what,
                e.name
            );
        }
    }
    for m in c.volume_mounts.iter().flatten() {
        let declared =
            w.pod.volumes.iter().flatten().any(|v| v.name == m.name) || w.claims.contains(&m.name);
        assert!(
            declared,
            "{}: volumeMount {:?} names no volume",
            w.what, m.name
        );
        assert!(
            m.sub_path.is_none(),
            "{}: volumeMount {:?}: subPath mounts do not see renewed Secrets",
            w.what,
            m.name
        );
    }
}

/// The node agent: where it runs, what of the host it sees, how it authenticates.
fn check_agent(r: &Rendered) {
    let w = r.workload(AGENT);
    let what = &w.what;
    let pod = w.pod;
    assert_eq!(
        pod.node_selector,
        Some(BTreeMap::from([(
            "kubernetes.io/os".to_owned(),
            "linux".to_owned()
        )])),
        "{what}: nodeSelector"
    );
    assert!(
        pod.tolerations
            .iter()
            .flatten()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "{what}: a toleration {{operator: Exists}} (every taint), so tainted nodes run it too"
    );
    // No API token: the distributor's projected token below is the only one.
    assert_eq!(
        pod.automount_service_account_token,
        Some(false),
        "{what}: automountServiceAccountToken"
    );
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(AGENT),
        "{what}: serviceAccountName"
    );
    let sa = r
        .service_accounts
        .iter()
        .find(|s| name(&s.metadata) == AGENT)
        .unwrap_or_else(|| panic!("{}: no ServiceAccount {AGENT}", r.source));
    assert_eq!(
        sa.automount_service_account_token,
        Some(false),
        "{}: ServiceAccount {AGENT} automountServiceAccountToken",
        r.source
    );

    let c = w.container();
    let node_name = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "NODE_NAME")
        .unwrap_or_else(|| panic!("{what}: no NODE_NAME"));
    assert_eq!(
        node_name
            .value_from
            .as_ref()
            .and_then(|f| f.field_ref.as_ref())
            .map(|f| f.field_path.as_str()),
        Some("spec.nodeName"),
        "{what}: NODE_NAME comes from the downward API's spec.nodeName"
    );
    // With --watch-nodes the distributor ignores the labels an agent reports: setting them
    // would only mislead whoever reads the DaemonSet.
    if r.workload(DISTRIBUTOR)
        .env("SECCOMP_DISTRIBUTOR_WATCH_NODES")
        == Some("true")
    {
        for var in ["SECCOMP_AGENT_LABELS", "SECCOMP_AGENT_LABELS_FILE"] {
            assert_eq!(
                w.env(var),
                None,
                "{what}: env {var} (the distributor takes labels from Node objects, \
                 SECCOMP_DISTRIBUTOR_WATCH_NODES)"
            );
        }
    }
    let host_root = w.required_env("SECCOMP_AGENT_HOST_ROOT");
    assert_eq!(host_root, "/host", "{what}: SECCOMP_AGENT_HOST_ROOT");
    let state_dir = w.required_env("SECCOMP_AGENT_STATE_DIR");
    assert!(
        !state_dir.starts_with(&format!("{host_root}/")),
        "{what}: --state-dir {state_dir} must not be under the host root"
    );

    // Exactly the allowed host paths, each where it belongs, and nothing else of the host;
    // the logs and /proc only for an agent that follows logs, and its logs only there.
    let audit_logs = w.env("SECCOMP_AGENT_AUDIT_LOGS");
    for log in audit_logs.iter().flat_map(|l| l.split(',')) {
        assert!(
            log.starts_with("/var/log/") && !log.split('/').any(|p| p == ".."),
            "{what}: SECCOMP_AGENT_AUDIT_LOGS names {log:?}, not a file under /var/log"
        );
    }
    let allowed: Vec<&(&str, &str, Option<&str>, bool)> = AGENT_HOST_PATHS
        .iter()
        .chain(AGENT_EVENT_PATHS.iter().filter(|_| audit_logs.is_some()))
        .collect();
    let mut host_paths = BTreeSet::new();
    for v in pod.volumes.iter().flatten() {
        let vwhat = format!("{what} volume {:?}", v.name);
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == v.name)
            .unwrap_or_else(|| panic!("{vwhat}: not mounted"));
        if let Some(host) = &v.host_path {
            assert_ne!(host.path.trim_end_matches('/'), "", "{vwhat}: the host's /");
            let (path, kind, at, read_only) = allowed
                .iter()
                .copied()
                .find(|(path, ..)| *path == host.path)
                .unwrap_or_else(|| {
                    panic!(
                        "{vwhat}: hostPath {} is not one the agent may mount",
                        host.path
                    )
                });
            assert_eq!(host.type_.as_deref(), Some(*kind), "{vwhat}: hostPath.type");
            // A node path appears at the same path under the host root, where the agent
            // looks for it; the state directory is wherever --state-dir says.
            let at = match at {
                Some(at) => {
                    assert_eq!(
                        *at,
                        format!("{host_root}{path}"),
                        "{vwhat}: under the host root"
                    );
                    at.to_string()
                }
                None => state_dir.to_owned(),
            };
            assert_eq!(mount.mount_path, at, "{vwhat}: mountPath");
            assert_eq!(
                mount.read_only.unwrap_or(false),
                *read_only,
                "{vwhat}: readOnly"
            );
            assert!(host_paths.insert(*path), "{vwhat}: mounted twice");
            continue;
        }
        // Besides host paths, only the projected token and CA.
        let projected = v
            .projected
            .as_ref()
            .unwrap_or_else(|| panic!("{vwhat}: neither a hostPath nor the projected token"));
        assert_eq!(mount.read_only, Some(true), "{vwhat}: readOnly");
        for source in projected.sources.iter().flatten() {
            if let Some(token) = &source.service_account_token {
                assert_eq!(
                    token.audience.as_deref(),
                    Some(DISTRIBUTOR),
                    "{vwhat}: the token's audience"
                );
                let expiry = token.expiration_seconds.unwrap_or(i64::MAX);
                assert!(
                    (600..=MAX_TOKEN_SECONDS).contains(&expiry),
                    "{vwhat}: expirationSeconds {expiry} (at most {MAX_TOKEN_SECONDS})"
                );
            } else {
                // A Secret here would let every node's kubelet read it (the distributor's
                // TLS Secret holds its private key).
                assert!(
                    source.config_map.is_some(),
                    "{vwhat}: only a token and a ConfigMap (the CA) are projected"
                );
            }
        }
    }
    assert_eq!(
        host_paths,
        allowed.iter().map(|(p, ..)| *p).collect(),
        "{what}: the host paths"
    );
    // The flags point into those volumes.
    let token_volume = w.volume_of("SECCOMP_AGENT_TOKEN_FILE");
    let token_file = w.required_env("SECCOMP_AGENT_TOKEN_FILE");
    assert!(
        projected_token(token_volume, token_file, &w).is_some(),
        "{what}: SECCOMP_AGENT_TOKEN_FILE={token_file} is not the projected token"
    );
    let ca_volume = w.volume_of("SECCOMP_AGENT_CA");
    assert!(
        ca_volume.projected.is_some() || ca_volume.config_map.is_some(),
        "{what}: SECCOMP_AGENT_CA from a ConfigMap"
    );
    assert!(
        w.required_env("SECCOMP_DISTRIBUTOR")
            .starts_with("https://"),
        "{what}: the distributor over TLS"
    );
}

/// The audience of the projected token that `file` (in `volume`) is.
fn projected_token(volume: &Volume, file: &str, w: &Workload<'_>) -> Option<String> {
    let (mount, _) = w.mount_of(file)?;
    let relative = file.strip_prefix(&format!("{}/", mount.mount_path))?;
    volume
        .projected
        .as_ref()?
        .sources
        .iter()
        .flatten()
        .filter_map(|s| s.service_account_token.as_ref())
        .find(|t| t.path == relative)
        .map(|t| {
            let expiry = t.expiration_seconds.unwrap_or(i64::MAX);
            assert!(
                (600..=MAX_TOKEN_SECONDS).contains(&expiry),
                "{}: token {file}: expirationSeconds {expiry}",
                w.what
            );
            t.audience.clone().unwrap_or_default()
        })
}

/// The name of a Secret volume's Secret.
fn secret_of(volume: &Volume) -> Option<&str> {
    volume.secret.as_ref()?.secret_name.as_deref()
}

/// The environment variable prefix of a service's own flags.
fn prefix(service: &str) -> &'static str {
    match service {
        REGISTRY => "SECCOMP_REGISTRY",
        DISTRIBUTOR => "SECCOMP_DISTRIBUTOR",
        other => panic!("not a service: {other}"),
    }
}

/// A server (the registry or the distributor): one replica, listening on its gRPC port
/// with TLS from `<name>-tls` and authentication, its database on its volume.
fn check_service(r: &Rendered, service: &str) {
    let w = r.workload(service);
    let what = &w.what;
    let set = r
        .stateful_sets
        .iter()
        .find(|s| name(&s.metadata) == service)
        .unwrap_or_else(|| panic!("{}: {service} is not a StatefulSet", r.source));
    // One replica on sled (single-writer); several only with the state in etcd, where
    // one leader is elected.
    let on_etcd = w
        .container()
        .env
        .iter()
        .flatten()
        .any(|e| e.name == "SECCOMP_DISTRIBUTOR_ETCD_ENDPOINTS");
    if !on_etcd {
        assert_eq!(
            set.spec.as_ref().unwrap().replicas,
            Some(1),
            "{what}: replicas (sled is single-writer)"
        );
    }
    assert_eq!(
        w.pod.service_account_name.as_deref(),
        Some(service),
        "{what}: serviceAccountName"
    );
    let p = prefix(service);
    let listen = w.required_env(&format!("{p}_LISTEN"));
    assert_eq!(
        listen,
        format!("0.0.0.0:{}", w.port("grpc")),
        "{what}: {p}_LISTEN on the grpc container port"
    );
    // The database on the claim, not on a pod volume that dies with the pod.
    let data = w.required_env(&format!("{p}_DATA_DIR"));
    match w.mount_of(data) {
        Some((mount, None)) if w.claims.contains(&mount.name) => {}
        _ => panic!("{what}: {p}_DATA_DIR={data} is not on a volumeClaimTemplate"),
    }
    // TLS from the Secret the user or cert-manager provides.
    let tls = format!("{service}-tls");
    for var in ["SECCOMP_TLS_CERT", "SECCOMP_TLS_KEY"] {
        assert_eq!(
            secret_of(w.volume_of(var)),
            Some(tls.as_str()),
            "{what}: {var} from the Secret {tls}"
        );
    }
    // Authentication: the generated auth file, and Kubernetes tokens for this audience.
    let auth = secret_of(w.volume_of("SECCOMP_AUTH_TOKENS"))
        .unwrap_or_else(|| panic!("{what}: SECCOMP_AUTH_TOKENS not from a Secret"));
    assert!(
        r.secrets.iter().any(|s| name(&s.metadata) == auth),
        "{what}: the auth Secret {auth} is not rendered"
    );
    assert_eq!(
        w.env("SECCOMP_AUTH_KUBERNETES"),
        Some("true"),
        "{what}: SECCOMP_AUTH_KUBERNETES"
    );
    assert_eq!(
        w.env("SECCOMP_AUTH_KUBERNETES_AUDIENCE"),
        Some(service),
        "{what}: SECCOMP_AUTH_KUBERNETES_AUDIENCE (tokens for this service only)"
    );
    assert!(
        w.env("SECCOMP_INSECURE").is_none_or(|v| v == "false"),
        "{what}: SECCOMP_INSECURE"
    );
    assert_eq!(
        w.pod.automount_service_account_token,
        Some(true),
        "{what}: automountServiceAccountToken (TokenReview uses the pod's token)"
    );
    assert_eq!(
        w.env("SECCOMP_AUTH_KUBERNETES_AGENTS"),
        (service == DISTRIBUTOR)
            .then(|| format!("system:serviceaccount:{NAMESPACE}:{AGENT}"))
            .as_deref(),
        "{what}: SECCOMP_AUTH_KUBERNETES_AGENTS"
    );
    // No TLS Secret in the render: keys are never shipped in the manifests.
    assert!(
        !r.secrets.iter().any(|s| name(&s.metadata) == tls),
        "{}: the Secret {tls} is rendered; it must come from the user or cert-manager",
        r.source
    );
}

/// Each service dials the other (and the agents the distributor) at its Service, over TLS,
/// with a projected token for the audience the other accepts.
fn check_calls_between_services(r: &Rendered) {
    let registry = r.workload(REGISTRY);
    let distributor = r.workload(DISTRIBUTOR);
    let agent = r.workload(AGENT);
    let calls = [
        (
            &registry,
            "SECCOMP_REGISTRY_DISTRIBUTOR",
            "SECCOMP_REGISTRY_DISTRIBUTOR_CA",
            "SECCOMP_REGISTRY_DISTRIBUTOR_TOKEN_FILE",
            DISTRIBUTOR,
        ),
        (
            &distributor,
            "SECCOMP_REGISTRY",
            "SECCOMP_DISTRIBUTOR_REGISTRY_CA",
            "SECCOMP_DISTRIBUTOR_REGISTRY_TOKEN_FILE",
            REGISTRY,
        ),
        (
            &agent,
            "SECCOMP_DISTRIBUTOR",
            "SECCOMP_AGENT_CA",
            "SECCOMP_AGENT_TOKEN_FILE",
            DISTRIBUTOR,
        ),
    ];
    for (caller, url_var, ca_var, token_var, callee) in calls {
        let what = &caller.what;
        let port = r
            .service(callee)
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some("grpc"))
            .unwrap_or_else(|| panic!("{}: Service {callee} has no grpc port", r.source))
            .port;
        assert_eq!(
            caller.required_env(url_var),
            format!("https://{callee}.{NAMESPACE}.svc:{port}"),
            "{what}: {url_var}"
        );
        caller.volume_of(ca_var);
        let token = caller.required_env(token_var);
        let audience = projected_token(caller.volume_of(token_var), token, caller)
            .unwrap_or_else(|| panic!("{what}: {token_var}={token} is not a projected token"));
        let accepted = r
            .workload(callee)
            .required_env("SECCOMP_AUTH_KUBERNETES_AUDIENCE")
            .to_owned();
        assert_eq!(
            audience, accepted,
            "{what}: the audience of {token_var} is the one {callee} accepts"
        );
    }
}

/// (API group, resource, verb).
type Grant = (String, String, String);

fn grants(rules: &[PolicyRule], what: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(
            rule.non_resource_urls.is_none(),
            "{what}: nonResourceURLs are not expected"
        );
        // Named objects only for the leader's label on its own pod (checked with the
        // StatefulSet in check_rbac).
        if let Some(names) = &rule.resource_names {
            assert!(
                rule.resources.as_deref() == Some(&["pods".to_owned()][..])
                    && rule.verbs == ["patch"]
                    && names.iter().all(|n| n.starts_with("seccomp-distributor-")),
                "{what}: resourceNames only for patching the distributor's own pods: {rule:?}"
            );
        }
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    for word in [group, resource, verb] {
                        assert!(!word.contains('*'), "{what}: a wildcard in {rule:?}");
                    }
                    assert_ne!(resource, "secrets", "{what}: access to Secrets");
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn grant(group: &str, resource: &str, verb: &str) -> Grant {
    (group.to_owned(), resource.to_owned(), verb.to_owned())
}

/// Each ServiceAccount gets exactly what its program's flags use, and the agent nothing.
fn check_rbac(r: &Rendered) {
    let mut roles: BTreeMap<(String, String), BTreeSet<Grant>> = BTreeMap::new();
    for role in &r.cluster_roles {
        let what = format!("{}: ClusterRole {:?}", r.source, name(&role.metadata));
        assert!(role.aggregation_rule.is_none(), "{what}: aggregationRule");
        roles.insert(
            ("ClusterRole".to_owned(), name(&role.metadata).to_owned()),
            grants(role.rules.as_deref().unwrap_or_default(), &what),
        );
    }
    for role in &r.roles {
        let what = format!("{}: Role {:?}", r.source, name(&role.metadata));
        roles.insert(
            ("Role".to_owned(), name(&role.metadata).to_owned()),
            grants(role.rules.as_deref().unwrap_or_default(), &what),
        );
    }
    let bindings = r
        .cluster_role_bindings
        .iter()
        .map(|b| ("ClusterRoleBinding", &b.metadata, &b.role_ref, &b.subjects))
        .chain(
            r.role_bindings
                .iter()
                .map(|b| ("RoleBinding", &b.metadata, &b.role_ref, &b.subjects)),
        );
    let accounts: BTreeSet<&str> = r
        .service_accounts
        .iter()
        .map(|s| name(&s.metadata))
        .collect();
    let mut granted: BTreeMap<&str, BTreeSet<Grant>> = BTreeMap::new();
    let mut bound = BTreeSet::new();
    for (kind, meta, role_ref, subjects) in bindings {
        let what = format!("{}: {kind} {:?}", r.source, name(meta));
        assert_eq!(role_ref.api_group, "rbac.authorization.k8s.io", "{what}");
        let key = (role_ref.kind.clone(), role_ref.name.clone());
        let rules = roles.get(&key).unwrap_or_else(|| {
            panic!("{what}: binds {key:?}, which this rendering does not define (a built-in role?)")
        });
        bound.insert(key.clone());
        for s in subjects.iter().flatten() {
            assert_eq!(s.kind, "ServiceAccount", "{what}: subject {s:?}");
            assert_eq!(
                s.namespace.as_deref(),
                Some(NAMESPACE),
                "{what}: subject {s:?}"
            );
            let account: &str = accounts
                .get(s.name.as_str())
                .copied()
                .unwrap_or_else(|| panic!("{what}: subject {} is not rendered", s.name));
            granted.entry(account).or_default().extend(rules.clone());
        }
    }
    for key in roles.keys() {
        assert!(
            bound.contains(key),
            "{}: {key:?} is bound to nobody",
            r.source
        );
    }

    let registry = r.workload(REGISTRY);
    let distributor = r.workload(DISTRIBUTOR);
    let on = |w: &Workload<'_>, var: &str| w.env(var) == Some("true");
    let mut expected: BTreeMap<&str, BTreeSet<Grant>> = BTreeMap::new();
    if on(&registry, "SECCOMP_AUTH_KUBERNETES") {
        expected.entry(REGISTRY).or_default().insert(grant(
            "authentication.k8s.io",
            "tokenreviews",
            "create",
        ));
    }
    let d = expected.entry(DISTRIBUTOR).or_default();
    if on(&distributor, "SECCOMP_AUTH_KUBERNETES") {
        d.insert(grant("authentication.k8s.io", "tokenreviews", "create"));
    }
    if on(&distributor, "SECCOMP_DISTRIBUTOR_CHECK_PODS") {
        // A kube-runtime watcher of every pod: a list, then a watch; never a get.
        for verb in ["list", "watch"] {
            d.insert(grant("", "pods", verb));
        }
    }
    if on(&distributor, "SECCOMP_DISTRIBUTOR_WATCH_NODES") {
        // A kube-runtime watcher: a list, then a watch (and a relist); never a get.
        for verb in ["list", "watch"] {
            d.insert(grant("", "nodes", verb));
        }
    }
    if distributor
        .container()
        .env
        .iter()
        .flatten()
        .any(|e| e.name == "SECCOMP_DISTRIBUTOR_LEADER_POD")
    {
        // --leader-pod: a merge patch of its own pod's labels, by name.
        d.insert(grant("", "pods", "patch"));
        let set = r
            .stateful_sets
            .iter()
            .find(|s| name(&s.metadata) == DISTRIBUTOR)
            .unwrap();
        let replicas = set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let pods: Vec<String> = (0..replicas)
            .map(|i| format!("{DISTRIBUTOR}-{i}"))
            .collect();
        let named: Vec<String> = r
            .roles
            .iter()
            .flat_map(|role| role.rules.iter().flatten())
            .filter_map(|rule| rule.resource_names.clone())
            .flatten()
            .collect();
        assert_eq!(
            named, pods,
            "{}: the pods the distributor may label are its StatefulSet's",
            r.source
        );
    }
    if on(&distributor, "SECCOMP_DISTRIBUTOR_APPLY_TO_CLUSTER") {
        // Server-side apply (patch; create when the object is new), the pruning list and
        // delete.
        for verb in ["create", "patch", "list", "delete"] {
            d.insert(grant("node.shturval.tech", "nodeconfigitems", verb));
        }
    }
    // The agent is absent: nothing at all.
    expected.retain(|_, grants| !grants.is_empty());
    let accounts: BTreeSet<&str> = granted.keys().chain(expected.keys()).copied().collect();
    for account in accounts {
        assert_eq!(
            granted.get(account),
            expected.get(account),
            "{}: ServiceAccount {account:?}: the rules of the roles bound to it, as (apiGroup, \
             resource, verb), against what its program's flags use (--auth-kubernetes, \
             --check-pods, --watch-nodes, --apply-to-cluster)",
            r.source
        );
    }
}

/// A NetworkPolicy peer in words: which pods, in which namespaces.
fn peer(p: &NetworkPolicyPeer, what: &str) -> String {
    assert!(
        p.ip_block.is_none(),
        "{what}: ipBlock peers are not expected"
    );
    let pods = match &p.pod_selector {
        None => "all pods".to_owned(),
        Some(s) => {
            let labels = match_labels(s, what);
            assert!(
                !labels.is_empty(),
                "{what}: an empty podSelector admits every pod"
            );
            let words: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("pods {}", words.join(","))
        }
    };
    match &p.namespace_selector {
        None => pods,
        Some(s) if match_labels(s, what).is_empty() => format!("{pods} in any namespace"),
        Some(s) => format!("{pods} in namespaces {:?}", match_labels(s, what)),
    }
}

/// Who each policy admits to the pods of each service, per container port name; `scraped`
/// are the (workload, container port) pairs the monitors scrape, where Prometheus is
/// admitted.
fn check_network_policies(r: &Rendered, scraped: &BTreeSet<(String, String)>) {
    let client = format!(
        "pods {}={} in any namespace",
        CLIENT_LABEL.0, CLIENT_LABEL.1
    );
    let pods_of = |name: &str| format!("pods app.kubernetes.io/name={name}");
    let prometheus = "pods app.kubernetes.io/name=prometheus in any namespace".to_owned();
    let key = |service: &str, port: &str| (service.to_owned(), port.to_owned());
    let mut expected: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::from([
        (
            key(REGISTRY, "grpc"),
            BTreeSet::from([pods_of(DISTRIBUTOR), client.clone()]),
        ),
        (
            key(DISTRIBUTOR, "grpc"),
            BTreeSet::from([pods_of(AGENT), pods_of(REGISTRY), client.clone()]),
        ),
    ]);
    // The servicemonitor component admits Prometheus to every port it scrapes, and to
    // nothing else; the base admits nobody to a metrics port.
    for (workload, port) in scraped {
        expected.insert(key(workload, port), BTreeSet::from([prometheus.clone()]));
    }
    let workloads = r.workloads();
    let mut admitted: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    // Every workload's pods are isolated for ingress by some policy: without one, a pod
    // admits everyone, whatever the other policies say.
    for w in &workloads {
        let isolated = r.network_policies.iter().any(|policy| {
            let spec = policy.spec.as_ref().unwrap();
            spec.policy_types.iter().flatten().any(|t| t == "Ingress")
                && spec
                    .pod_selector
                    .as_ref()
                    .is_some_and(|s| selects(&match_labels(s, &w.what), &w.labels))
        });
        assert!(
            isolated,
            "{}: no NetworkPolicy with policyTypes [Ingress] selects its pods \
             (spec.podSelector), so they admit everyone",
            w.what
        );
    }
    for policy in &r.network_policies {
        let what = format!("{}: NetworkPolicy {:?}", r.source, name(&policy.metadata));
        let spec = policy.spec.as_ref().unwrap();
        assert!(
            spec.policy_types.iter().flatten().any(|t| t == "Ingress"),
            "{what}: policyTypes has Ingress"
        );
        let selector = match_labels(spec.pod_selector.as_ref().unwrap(), &what);
        let targets: Vec<&Workload<'_>> = workloads
            .iter()
            .filter(|w| selects(&selector, &w.labels))
            .collect();
        assert_eq!(targets.len(), 1, "{what}: selects one workload's pods");
        let target = targets[0];
        for rule in spec.ingress.iter().flatten() {
            let from = rule
                .from
                .as_ref()
                .filter(|f| !f.is_empty())
                .unwrap_or_else(|| panic!("{what}: a rule without `from` admits everyone"));
            let ports = rule
                .ports
                .as_ref()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| panic!("{what}: a rule without `ports` admits every port"));
            for port in ports {
                let port_name = match port.port.as_ref() {
                    Some(IntOrString::String(n)) => {
                        target.port(n);
                        n.clone()
                    }
                    other => panic!("{what}: port {other:?}: name the container port"),
                };
                for p in from {
                    // A peer in this namespace must be pods that exist.
                    if p.namespace_selector.is_none() {
                        let labels = match_labels(p.pod_selector.as_ref().unwrap(), &what);
                        assert!(
                            workloads.iter().any(|w| selects(&labels, &w.labels)),
                            "{what}: peer {labels:?} selects no pods of this rendering"
                        );
                    }
                    admitted
                        .entry(key(target.name, &port_name))
                        .or_default()
                        .insert(peer(p, &what));
                }
            }
        }
    }
    let keys: BTreeSet<&(String, String)> = admitted.keys().chain(expected.keys()).collect();
    for key in keys {
        let (workload, port) = key;
        assert_eq!(
            admitted.get(key),
            expected.get(key),
            "{}: the NetworkPolicies selecting {workload}'s pods: spec.ingress[].from of the \
             rules for its port {port:?} (None: nobody admitted)",
            r.source
        );
    }
}

/// Services select their workload and name its ports; a disruption budget covers each
/// service.
fn check_services_and_budgets(r: &Rendered) {
    let workloads = r.workloads();
    for s in &r.services {
        let what = format!("{}: Service {:?}", r.source, name(&s.metadata));
        let spec = s.spec.as_ref().unwrap();
        let mut selector = spec.selector.clone().unwrap_or_default();
        assert!(!selector.is_empty(), "{what}: no selector");
        // The leader's label is set at run time (--leader-pod), not in the template.
        if selector.remove("seccomp.dev/leader").is_some() {
            let d = r.workload(DISTRIBUTOR);
            assert!(
                d.container()
                    .env
                    .iter()
                    .flatten()
                    .any(|e| e.name == "SECCOMP_DISTRIBUTOR_LEADER_POD"),
                "{what}: selects seccomp.dev/leader, which only --leader-pod sets"
            );
        }
        let targets: Vec<&Workload<'_>> = workloads
            .iter()
            .filter(|w| selects(&selector, &w.labels))
            .collect();
        assert_eq!(targets.len(), 1, "{what}: selects one workload");
        for port in spec.ports.iter().flatten() {
            match &port.target_port {
                Some(IntOrString::String(n)) => {
                    targets[0].port(n);
                    assert_eq!(port.name.as_ref(), Some(n), "{what}: port name");
                }
                other => panic!("{what}: targetPort {other:?}: name the container port"),
            }
        }
    }
    for service in [REGISTRY, DISTRIBUTOR] {
        // The gRPC API and the metrics listener (for a ServiceMonitor).
        let ports: BTreeSet<&str> = r
            .service(service)
            .spec
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.name.as_deref())
            .collect();
        assert_eq!(
            ports,
            BTreeSet::from(["grpc", "metrics"]),
            "{}: Service {service:?} spec.ports[].name",
            r.source
        );
    }
    for service in [REGISTRY, DISTRIBUTOR] {
        let w = r.workload(service);
        let budgets: Vec<&PodDisruptionBudget> = r
            .disruption_budgets
            .iter()
            .filter(|b| {
                let selector = b.spec.as_ref().and_then(|s| s.selector.as_ref()).unwrap();
                selects(&match_labels(selector, &w.what), &w.labels)
            })
            .collect();
        assert_eq!(budgets.len(), 1, "{}: one PodDisruptionBudget", w.what);
    }
}

/// The NodeConfigItem CRD is there, for the group the distributor's RBAC names.
fn check_crd(r: &Rendered) {
    assert_eq!(
        r.crds.len(),
        1,
        "{}: one CustomResourceDefinition",
        r.source
    );
    let crd = &r.crds[0];
    assert_eq!(name(&crd.metadata), "nodeconfigitems.node.shturval.tech");
    assert_eq!(crd.spec.group, "node.shturval.tech");
    assert_eq!(crd.spec.scope, "Cluster");
}

/// The monitors' scrape targets: a ServiceMonitor selects one Service in the namespace and
/// scrapes a port of it whose target is the container port that the workload's
/// `*_METRICS_LISTEN` binds; a PodMonitor selects one workload's pods and scrapes that
/// container port directly. Returns the (workload, container port) pairs scraped.
fn check_monitors(r: &Rendered) -> BTreeSet<(String, String)> {
    let workloads = r.workloads();
    let mut scraped = BTreeSet::new();
    let monitors = r
        .service_monitors
        .iter()
        .map(|m| (m, "endpoints"))
        .chain(r.pod_monitors.iter().map(|m| (m, "podMetricsEndpoints")));
    for (m, endpoints) in monitors {
        let kind = m["kind"].as_str().unwrap();
        let what = format!("{}: {kind} {}", r.source, m["metadata"]["name"]);
        let selector: BTreeMap<String, String> =
            serde_json::from_value(m["spec"]["selector"]["matchLabels"].clone())
                .unwrap_or_else(|e| panic!("{what}: spec.selector.matchLabels: {e}"));
        assert!(
            !selector.is_empty(),
            "{what}: spec.selector.matchLabels is empty"
        );
        assert_eq!(
            m["spec"]["namespaceSelector"]["matchNames"],
            serde_json::json!([NAMESPACE]),
            "{what}: spec.namespaceSelector.matchNames"
        );
        // What it selects: a Service (and through it a workload), or a workload's pods.
        let service = (endpoints == "endpoints").then(|| {
            let services: Vec<&Service> = r
                .services
                .iter()
                .filter(|s| selects(&selector, s.metadata.labels.as_ref().unwrap()))
                .collect();
            assert_eq!(
                services.len(),
                1,
                "{what}: spec.selector.matchLabels {selector:?} selects one Service"
            );
            services[0]
        });
        let pod_labels = match service {
            Some(s) => s
                .spec
                .as_ref()
                .unwrap()
                .selector
                .clone()
                .unwrap_or_default(),
            None => selector.clone(),
        };
        let targets: Vec<&Workload<'_>> = workloads
            .iter()
            .filter(|w| selects(&pod_labels, &w.labels))
            .collect();
        assert_eq!(
            targets.len(),
            1,
            "{what}: spec.selector.matchLabels {selector:?}: selects one workload's pods"
        );
        let w = targets[0];
        let listened = metrics_port_name(w);
        let list = json_array(m, &format!("/spec/{endpoints}"), &what);
        assert!(!list.is_empty(), "{what}: spec.{endpoints} is empty");
        for (i, endpoint) in list.iter().enumerate() {
            let at = format!("{what} spec.{endpoints}[{i}]");
            let port = json_str(endpoint, "/port", &at);
            // The container port behind the scraped port.
            let container_port = match service {
                Some(s) => {
                    let service_port = s
                        .spec
                        .as_ref()
                        .unwrap()
                        .ports
                        .iter()
                        .flatten()
                        .find(|p| p.name.as_deref() == Some(port))
                        .unwrap_or_else(|| {
                            panic!(
                                "{at}.port: Service {:?} has no port named {port:?}",
                                name(&s.metadata)
                            )
                        });
                    match &service_port.target_port {
                        Some(IntOrString::String(n)) => n.clone(),
                        other => panic!(
                            "{at}.port: Service {:?} port {port:?} targetPort {other:?}: \
                             name the container port",
                            name(&s.metadata)
                        ),
                    }
                }
                None => port.to_owned(),
            };
            w.port(&container_port);
            assert_eq!(
                container_port,
                listened,
                "{at}.port: scrapes {}'s container port {container_port:?}, but {} binds \
                 the port {listened:?}",
                w.what,
                metrics_listen_var(w.name)
            );
            assert_eq!(json_str(endpoint, "/path", &at), "/metrics", "{at}.path");
            if let Some(scheme) = endpoint.get("scheme") {
                assert_eq!(
                    scheme, "http",
                    "{at}.scheme (the metrics listener has no TLS)"
                );
            }
            scraped.insert((w.name.to_owned(), container_port));
        }
    }
    scraped
}

/// cert-manager: a CA issued by a self-signed Issuer, a CA Issuer from its Secret, and one
/// serving certificate per service, for the names clients dial, into the Secret it mounts.
fn check_cert_manager(r: &Rendered) {
    let issuers: BTreeMap<&str, &Value> = r
        .issuers
        .iter()
        .map(|i| (i["metadata"]["name"].as_str().unwrap(), i))
        .collect();
    let mut serving = BTreeMap::new();
    let mut ca_secrets = BTreeSet::new();
    for c in &r.certificates {
        let what = format!("{}: Certificate {}", r.source, c["metadata"]["name"]);
        let issuer = json_str(c, "/spec/issuerRef/name", &what);
        assert_eq!(
            c["spec"]["issuerRef"]["kind"], "Issuer",
            "{what}: issuerRef.kind"
        );
        let issuer = issuers
            .get(issuer)
            .unwrap_or_else(|| panic!("{what}: issuer {issuer} is not rendered"));
        let secret = json_str(c, "/spec/secretName", &what);
        if c["spec"]["isCA"] == true {
            assert!(
                issuer["spec"].get("selfSigned").is_some(),
                "{what}: the CA comes from the self-signed issuer"
            );
            ca_secrets.insert(secret.to_owned());
        } else {
            let ca = json_str(issuer, "/spec/ca/secretName", &what);
            assert!(
                r.certificates
                    .iter()
                    .any(|o| o["spec"]["isCA"] == true && o["spec"]["secretName"] == ca),
                "{what}: its issuer's CA Secret {ca} comes from no CA Certificate"
            );
            let names: BTreeSet<&str> = json_array(c, "/spec/dnsNames", &what)
                .iter()
                .map(|n| n.as_str().unwrap())
                .collect();
            serving.insert(secret.to_owned(), names);
        }
    }
    assert_eq!(ca_secrets.len(), 1, "{}: one CA", r.source);
    for service in [REGISTRY, DISTRIBUTOR] {
        let names = serving
            .remove(&format!("{service}-tls"))
            .unwrap_or_else(|| panic!("{}: no Certificate for {service}-tls", r.source));
        let dialled = format!("{service}.{NAMESPACE}.svc");
        assert!(
            names.contains(dialled.as_str()),
            "{}: the certificate of {service} lacks {dialled}: {names:?}",
            r.source
        );
    }
    assert!(
        serving.is_empty(),
        "{}: unexpected certificates {serving:?}",
        r.source
    );
    // The CA's key stays in its Secret: no pod mounts it.
    for w in r.workloads() {
        for v in w.pod.volumes.iter().flatten() {
            let projected = v
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(|s| s.secret.as_ref().map(|s| s.name.as_str()));
            for secret in secret_of(v).into_iter().chain(projected) {
                assert!(
                    !ca_secrets.contains(secret),
                    "{}: mounts the CA's Secret {secret}",
                    w.what
                );
            }
        }
    }
}

/// A TokenReview stand-in: the token is the user, `<user>@<node>` for a token bound to a
/// pod on a node.
struct NamedTokens;

impl auth::TokenReviewer for NamedTokens {
    fn review<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Option<Reviewed>, String>> {
        Box::pin(async move {
            let (user, node) = match token.split_once('@') {
                Some((user, node)) => (user, Some(node.to_owned())),
                None => (token, None),
            };
            let namespace = user.split(':').nth(2).unwrap_or_default();
            Ok(Some(Reviewed {
                username: user.to_owned(),
                groups: vec![
                    "system:serviceaccounts".to_owned(),
                    format!("system:serviceaccounts:{namespace}"),
                ],
                node,
            }))
        })
    }
}

fn bearer(token: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    headers
}

/// The authenticator a service builds from its rendered auth file and flags.
fn authenticator(r: &Rendered, service: &str) -> Authenticator {
    let w = r.workload(service);
    let secret_name = secret_of(w.volume_of("SECCOMP_AUTH_TOKENS")).unwrap();
    let file = w
        .required_env("SECCOMP_AUTH_TOKENS")
        .rsplit('/')
        .next()
        .unwrap();
    let secret = r
        .secrets
        .iter()
        .find(|s| name(&s.metadata) == secret_name)
        .unwrap();
    let bytes = &secret
        .data
        .as_ref()
        .and_then(|d| d.get(file))
        .unwrap_or_else(|| panic!("{}: Secret {secret_name} has no key {file}", r.source))
        .0;
    let text = std::str::from_utf8(bytes).unwrap();
    let mut identities = Identities::parse(text).unwrap_or_else(|e| {
        panic!(
            "{}: Secret {secret_name}: the auth file is refused: {e}",
            r.source
        )
    });
    if let Some(agents) = w.env("SECCOMP_AUTH_KUBERNETES_AGENTS") {
        identities = identities.with_kubernetes_agents(agents.to_owned());
    }
    Authenticator::new(identities).with_token_review(Arc::new(NamedTokens))
}

/// The services' auth files, as the services read them: each lets the other service in as
/// a viewer, the distributor takes the agents as nodes, and an unknown account is refused.
async fn check_auth_files(r: &Rendered) {
    let account = |name: &str| format!("system:serviceaccount:{NAMESPACE}:{name}");
    for (service, caller) in [(REGISTRY, DISTRIBUTOR), (DISTRIBUTOR, REGISTRY)] {
        let auth = authenticator(r, service);
        let who = auth
            .authenticate(&bearer(&account(caller)), None)
            .await
            .unwrap_or_else(|e| panic!("{}: {service} refuses {caller}'s token: {e:?}", r.source));
        assert!(
            matches!(
                who,
                Principal::Caller {
                    role: auth::Role::Viewer,
                    ..
                }
            ),
            "{}: {service} takes {caller} as {who:?}, not a viewer",
            r.source
        );
        let stranger = auth
            .authenticate(&bearer("system:serviceaccount:default:default"), None)
            .await;
        assert!(
            stranger.is_err(),
            "{}: {service} lets default/default in as {stranger:?}",
            r.source
        );
    }
    let auth = authenticator(r, DISTRIBUTOR);
    let agent = auth
        .authenticate(&bearer(&format!("{}@worker-1", account(AGENT))), None)
        .await
        .unwrap();
    assert_eq!(
        agent,
        Principal::Node {
            node: "worker-1".into()
        },
        "{}: the distributor takes an agent's token as its node",
        r.source
    );
}

// ---------------------------------------------------------------------------------------
// The Grafana dashboard (deploy/grafana/seccomp.json, not part of kustomize).

/// The dashboard, relative to the repository.
const DASHBOARD: &str = "deploy/grafana/seccomp.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MetricKind {
    /// Registered without `_total`, which prometheus_client appends.
    Counter,
    Gauge,
    /// Queried as `_bucket`, `_sum` and `_count`.
    Histogram,
}

/// Every metric the programs export (deploy/README.md, "Metrics"): its name as Prometheus
/// sees it, its kind, and the source file that registers it. The dashboard may query these
/// and nothing else, and each is checked against its source file.
const METRICS: &[(&str, MetricKind, &str)] = &[
    (
        "grpc_server_requests_total",
        MetricKind::Counter,
        "server/src/metrics.rs",
    ),
    (
        "grpc_server_request_duration_seconds",
        MetricKind::Histogram,
        "server/src/metrics.rs",
    ),
    (
        "seccomp_registry_publishes_total",
        MetricKind::Counter,
        "registry/src/metrics.rs",
    ),
    (
        "seccomp_registry_validation_duration_seconds",
        MetricKind::Histogram,
        "registry/src/metrics.rs",
    ),
    (
        "seccomp_registry_profiles",
        MetricKind::Gauge,
        "registry/src/metrics.rs",
    ),
    (
        "seccomp_registry_versions",
        MetricKind::Gauge,
        "registry/src/metrics.rs",
    ),
    (
        "seccomp_distributor_agents_connected",
        MetricKind::Gauge,
        "distributor/src/metrics.rs",
    ),
    (
        "seccomp_distributor_nodes",
        MetricKind::Gauge,
        "distributor/src/metrics.rs",
    ),
    (
        "seccomp_distributor_rollouts",
        MetricKind::Gauge,
        "distributor/src/metrics.rs",
    ),
    (
        "seccomp_distributor_node_confirmation_seconds",
        MetricKind::Histogram,
        "distributor/src/metrics.rs",
    ),
    (
        "seccomp_distributor_desired_sets_sent_total",
        MetricKind::Counter,
        "distributor/src/metrics.rs",
    ),
    (
        "seccomp_distributor_nacks_total",
        MetricKind::Counter,
        "distributor/src/metrics.rs",
    ),
    (
        "seccomp_distributor_drift_reports_total",
        MetricKind::Counter,
        "distributor/src/metrics.rs",
    ),
    (
        "seccomp_distributor_sink_errors_total",
        MetricKind::Counter,
        "distributor/src/metrics.rs",
    ),
    (
        "seccomp_agent_applies_total",
        MetricKind::Counter,
        "node-agent/src/metrics.rs",
    ),
    (
        "seccomp_agent_files_written_total",
        MetricKind::Counter,
        "node-agent/src/metrics.rs",
    ),
    (
        "seccomp_agent_files_removed_total",
        MetricKind::Counter,
        "node-agent/src/metrics.rs",
    ),
    (
        "seccomp_agent_drift_repairs_total",
        MetricKind::Counter,
        "node-agent/src/metrics.rs",
    ),
    (
        "seccomp_agent_last_sync_timestamp_seconds",
        MetricKind::Gauge,
        "node-agent/src/metrics.rs",
    ),
    (
        "seccomp_agent_files_managed",
        MetricKind::Gauge,
        "node-agent/src/metrics.rs",
    ),
    (
        "seccomp_agent_connected",
        MetricKind::Gauge,
        "node-agent/src/metrics.rs",
    ),
];

/// The prefix a metrics source file's sub-registry gives its names (`None`: the file
/// registers full names).
fn metrics_prefix(file: &str) -> Option<&'static str> {
    match file {
        "server/src/metrics.rs" => None,
        "registry/src/metrics.rs" => Some("seccomp_registry"),
        "distributor/src/metrics.rs" => Some("seccomp_distributor"),
        "node-agent/src/metrics.rs" => Some("seccomp_agent"),
        other => panic!("METRICS: no prefix known for {other}"),
    }
}

/// The metric `name` queries, if it is one of [`METRICS`] (a histogram by its series).
fn exported_metric(name: &str) -> Option<&'static str> {
    METRICS.iter().find_map(|&(metric, kind, _)| {
        let matches = match kind {
            MetricKind::Counter | MetricKind::Gauge => name == metric,
            MetricKind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|suffix| name.strip_suffix(suffix) == Some(metric)),
        };
        matches.then_some(metric)
    })
}

/// The index after the string literal that starts at `i` (PromQL: "...", '...', `...`).
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        if chars[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// The index after the `close` that ends the group opened at `i`, strings skipped.
fn skip_group(chars: &[char], i: usize, close: char) -> usize {
    let mut j = i + 1;
    while j < chars.len() && chars[j] != close {
        j = if matches!(chars[j], '"' | '\'' | '`') {
            skip_string(chars, j)
        } else {
            j + 1
        };
    }
    j + 1
}

/// The metric names a PromQL expression selects: identifiers outside label matchers
/// (`{...}`), ranges (`[...]`), strings and grouping label lists, that are no function
/// call, aggregation or keyword.
fn promql_metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "atan2",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    // Followed by a list of label names in parentheses.
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(&chars, i, '}');
        } else if c == '[' {
            i = skip_group(&chars, i, ']');
        } else if c == '$'
            || c.is_ascii_digit()
            || (c == '.' && i + 1 < chars.len() && chars[i + 1].is_ascii_digit())
        {
            // A Grafana variable, a number or a duration.
            i += 1;
            while i < chars.len() && (word_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if word_char(c) {
            let start = i;
            while i < chars.len() && word_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if GROUPING.contains(&word.as_str()) {
                if call {
                    i = skip_group(&chars, next, ')');
                }
            } else if !call && !KEYWORDS.contains(&word.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The panels of a dashboard, rows' nested panels included, with where each is.
fn dashboard_panels<'a>(panels: &'a [Value], at: &str, out: &mut Vec<(String, &'a Value)>) {
    for (i, panel) in panels.iter().enumerate() {
        let here = format!("{at}[{i}]");
        if let Some(nested) = panel.get("panels").and_then(Value::as_array) {
            dashboard_panels(nested, &format!("{here}.panels"), out);
        }
        out.push((here, panel));
    }
}

// ---------------------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn the_base_is_strict_and_least_privilege() {
    let Some(yaml) = render("deploy") else {
        return;
    };
    let r = Rendered::parse("deploy", &yaml);
    check_all(&r);
    check_auth_files(&r).await;
    // The base applies NCIs to the cluster, ships no certificates or monitors, and no
    // Secret but the two generated auth files.
    let d = r.workload(DISTRIBUTOR);
    assert_eq!(
        d.env("SECCOMP_DISTRIBUTOR_APPLY_TO_CLUSTER"),
        Some("true"),
        "{}: --apply-to-cluster",
        d.what
    );
    assert_eq!(d.env("SECCOMP_DISTRIBUTOR_YAML_DIR"), None, "{}", d.what);
    let a = r.workload(AGENT);
    assert_eq!(
        a.env("SECCOMP_AGENT_AUDIT_LOGS"),
        None,
        "{}: the base follows no logs (no /var/log, no /proc)",
        a.what
    );
    assert_eq!(
        d.env("SECCOMP_DISTRIBUTOR_WATCH_NODES"),
        Some("true"),
        "{}: env SECCOMP_DISTRIBUTOR_WATCH_NODES (node labels from the Node objects)",
        d.what
    );
    assert!(
        r.issuers.is_empty()
            && r.certificates.is_empty()
            && r.service_monitors.is_empty()
            && r.pod_monitors.is_empty(),
        "deploy: no Issuer, Certificate, ServiceMonitor or PodMonitor in the base"
    );
    let secrets: BTreeSet<&str> = r
        .secrets
        .iter()
        .map(|s| name(&s.metadata).rsplit_once('-').unwrap().0)
        .collect();
    assert_eq!(
        secrets,
        BTreeSet::from(["seccomp-registry-auth", "seccomp-distributor-auth"]),
        "deploy: the Secrets"
    );
}

#[tokio::test]
async fn the_example_overlay_with_every_component_too() {
    let dir = "deploy/overlays/example";
    let Some(yaml) = render(dir) else {
        return;
    };
    let r = Rendered::parse(dir, &yaml);
    check_all(&r);
    check_auth_files(&r).await;
    check_cert_manager(&r);
    // servicemonitor: every program's metrics listener is scraped, the agents' pod by pod.
    assert_eq!(
        r.service_monitors.len(),
        2,
        "{dir}: the ServiceMonitors (registry, distributor)"
    );
    assert_eq!(
        r.pod_monitors.len(),
        1,
        "{dir}: the PodMonitor (node agents)"
    );
    let scraped: BTreeSet<String> = check_monitors(&r).into_iter().map(|(w, _)| w).collect();
    assert_eq!(
        scraped,
        BTreeSet::from([REGISTRY, DISTRIBUTOR, AGENT].map(String::from)),
        "{dir}: the workloads the ServiceMonitors and the PodMonitor scrape"
    );
    assert!(
        r.pod_monitors
            .iter()
            .all(|m| m["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == AGENT),
        "{dir}: the PodMonitor is the agents' (spec.selector.matchLabels)"
    );
    // gitops: the YAML files on the distributor's volume, nothing applied to the cluster
    // (check_rbac has already seen the nodeconfigitems rule go with it).
    let d = r.workload(DISTRIBUTOR);
    assert_eq!(
        d.env("SECCOMP_DISTRIBUTOR_APPLY_TO_CLUSTER"),
        None,
        "{}: no --apply-to-cluster with the gitops component",
        d.what
    );
    let yaml_dir = d.required_env("SECCOMP_DISTRIBUTOR_YAML_DIR");
    match d.mount_of(yaml_dir) {
        Some((mount, None)) if d.claims.contains(&mount.name) => {}
        _ => panic!(
            "{}: SECCOMP_DISTRIBUTOR_YAML_DIR={yaml_dir} is not on the volume",
            d.what
        ),
    }
    // seccomp-events: the agents follow the node's logs (check_agent saw the mounts).
    let a = r.workload(AGENT);
    assert!(
        a.required_env("SECCOMP_AGENT_AUDIT_LOGS")
            .contains("/var/log/audit/audit.log"),
        "{}: SECCOMP_AGENT_AUDIT_LOGS with the seccomp-events component",
        a.what
    );
    let image = d.container().image.as_deref().unwrap();
    assert!(
        !image.ends_with(":latest"),
        "{}: the example pins its image, not {image}",
        d.what
    );
}

#[tokio::test]
async fn the_replicated_overlay_on_etcd_too() {
    let dir = "deploy/overlays/replicated";
    let Some(yaml) = render(dir) else {
        return;
    };
    let r = Rendered::parse(dir, &yaml);
    check_all(&r);
    check_auth_files(&r).await;
    check_cert_manager(&r);
    let d = r.workload(DISTRIBUTOR);
    let set = r
        .stateful_sets
        .iter()
        .find(|s| name(&s.metadata) == DISTRIBUTOR)
        .unwrap();
    let spec = set.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(3), "{}: three replicas", d.what);
    // Every replica serves, leading or not: created together, and rolled one at a time.
    assert_eq!(
        spec.pod_management_policy.as_deref(),
        Some("Parallel"),
        "{}: podManagementPolicy",
        d.what
    );
    let from = |var: &str| -> (Option<String>, Option<String>) {
        let e = d
            .container()
            .env
            .iter()
            .flatten()
            .find(|e| e.name == var)
            .unwrap_or_else(|| panic!("{}: no {var}", d.what));
        let source = e.value_from.as_ref();
        (
            source
                .and_then(|s| s.field_ref.as_ref())
                .map(|f| f.field_path.clone()),
            source
                .and_then(|s| s.config_map_key_ref.as_ref())
                .map(|c| format!("{}/{}", c.name, c.key)),
        )
    };
    assert_eq!(
        from("SECCOMP_DISTRIBUTOR_ETCD_ENDPOINTS").1.as_deref(),
        Some("seccomp-etcd/endpoints"),
        "{}: the etcd endpoints from the platform's ConfigMap",
        d.what
    );
    for var in [
        "SECCOMP_DISTRIBUTOR_REPLICA_ID",
        "SECCOMP_DISTRIBUTOR_LEADER_POD",
    ] {
        assert_eq!(
            from(var).0.as_deref(),
            Some("metadata.name"),
            "{}: {var} is the pod's name",
            d.what
        );
    }
    assert_eq!(
        from("SECCOMP_DISTRIBUTOR_LEADER_POD_NAMESPACE")
            .0
            .as_deref(),
        Some("metadata.namespace")
    );
    for var in [
        "SECCOMP_DISTRIBUTOR_ETCD_CA",
        "SECCOMP_DISTRIBUTOR_ETCD_CERT",
        "SECCOMP_DISTRIBUTOR_ETCD_KEY",
    ] {
        let volume = d.volume_of(var);
        assert_eq!(
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
            Some("seccomp-etcd-client"),
            "{}: {var} from the Secret seccomp-etcd-client",
            d.what
        );
    }
    // The Service spreads agents and callers over every replica, the leader's label not
    // in its selector (check_all: it selects the distributor's pods).
    let service = r.service(DISTRIBUTOR);
    assert!(
        service
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_some_and(|s| !s.contains_key("seccomp.dev/leader")),
        "{dir}: Service {DISTRIBUTOR} selects every replica"
    );
}

#[test]
fn a_typo_in_a_rendered_manifest_is_refused() {
    let Some(yaml) = render("deploy") else {
        return;
    };
    let docs = documents(&yaml);
    let original = docs
        .iter()
        .find(|d| d["kind"] == "StatefulSet" && d["metadata"]["name"] == REGISTRY)
        .expect("the registry's StatefulSet");
    strict::<StatefulSet>(original, "as rendered").unwrap();

    let typos = [
        (
            "/spec/template/spec/containers/0/securityContext",
            "readOnlyRootFilesytem",
            Value::Bool(true),
        ),
        (
            "/spec/template/spec",
            "automountServiceAcountToken",
            Value::Bool(false),
        ),
        (
            "/spec/template/spec/volumes/0/secret",
            "secretNme",
            Value::String("x".to_owned()),
        ),
        ("", "sepc", serde_json::json!({"replicas": 1})),
    ];
    for (pointer, field, value) in typos {
        let mut doc = original.clone();
        doc.pointer_mut(pointer)
            .and_then(Value::as_object_mut)
            .unwrap_or_else(|| panic!("{pointer} is not in the registry's StatefulSet"))
            .insert(field.to_owned(), value);
        // k8s-openapi alone takes it, dropping the field...
        let lax: StatefulSet = serde_json::from_value(doc.clone()).unwrap();
        assert!(!serde_json::to_string(&lax).unwrap().contains(field));
        // ... the strict parse does not.
        let err = strict::<StatefulSet>(&doc, "with a typo").unwrap_err();
        assert!(
            err.contains(
                &format!("{pointer}.{field}")
                    .replace('/', ".")
                    .replace(".0.", "[0].")
            ),
            "the error names the field: {err}"
        );
    }
    // And a wrong value type is no unknown field, but still refused.
    let mut doc = original.clone();
    *doc.pointer_mut("/spec/replicas").unwrap() = Value::String("one".to_owned());
    assert!(strict::<StatefulSet>(&doc, "replicas: one").is_err());
}

#[test]
fn the_grafana_dashboard_queries_only_exported_metrics() {
    // The metric list against the code: each name is registered, under its prefix, in the
    // file named (a renamed metric fails here, and then in the dashboard).
    for &(metric, kind, file) in METRICS {
        let text = std::fs::read_to_string(repo().join(file))
            .unwrap_or_else(|e| panic!("METRICS: {metric}: {file}: {e}"));
        let mut short = metric;
        if let Some(prefix) = metrics_prefix(file) {
            assert!(
                text.contains(&format!("sub_registry_with_prefix(\"{prefix}\")")),
                "METRICS: {metric}: {file} registers nothing under the prefix {prefix}"
            );
            short = metric
                .strip_prefix(&format!("{prefix}_"))
                .unwrap_or_else(|| {
                    panic!("METRICS: {metric} lacks the prefix {prefix}_ of {file}")
                });
        }
        if kind == MetricKind::Counter {
            short = short
                .strip_suffix("_total")
                .unwrap_or_else(|| panic!("METRICS: counter {metric} must end in _total"));
        } else {
            assert!(
                !metric.ends_with("_total"),
                "METRICS: {metric}: only counters end in _total"
            );
        }
        assert!(
            text.contains(&format!("\"{short}\"")),
            "METRICS: {metric} ({kind:?}): {file} registers no metric \"{short}\""
        );
    }

    // The lexer itself.
    assert_eq!(
        promql_metric_names(
            "histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{x=\"}y\",z=~'$v'}[$__rate_interval] offset 5m))) \
             / on (job) group_left (node) max without (pod) (b) or vector(1e3) > bool 2"
        ),
        ["a_bucket", "b"],
        "promql_metric_names"
    );

    let path = repo().join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let dashboard: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: not JSON: {e}"));
    for key in ["title", "uid"] {
        assert!(
            dashboard[key].as_str().is_some_and(|v| !v.is_empty()),
            "{DASHBOARD}: .{key} is not a non-empty string"
        );
    }
    // Template variables: PromQL in a query variable would escape the check below.
    let variables = dashboard
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for (i, variable) in variables.iter().enumerate() {
        let kind = variable["type"].as_str().unwrap_or_default();
        assert!(
            ["datasource", "interval", "custom", "constant", "textbox"].contains(&kind),
            "{DASHBOARD}: .templating.list[{i}] ({}) .type {kind:?}: query variables are not \
             checked by this test; extend it first",
            variable["name"]
        );
    }
    let top = json_array(&dashboard, "/panels", DASHBOARD);
    let mut panels = Vec::new();
    dashboard_panels(top, ".panels", &mut panels);
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for (at, panel) in &panels {
        let title = panel["title"].as_str().unwrap_or_default();
        let what = format!("{DASHBOARD}: panel {at} {title:?}");
        assert!(!title.is_empty(), "{what}: .title is empty");
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: .id is not a number"));
        assert!(ids.insert(id), "{what}: .id {id} is used twice");
        let kind = panel["type"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: .type is not a string"));
        for key in ["x", "y", "w", "h"] {
            assert!(
                panel["gridPos"][key].is_u64(),
                "{what}: .gridPos.{key} is not a number"
            );
        }
        if kind == "row" {
            assert!(
                panel.get("targets").is_none(),
                "{what}: a row has no .targets"
            );
            continue;
        }
        let targets = json_array(panel, "/targets", &what);
        assert!(!targets.is_empty(), "{what}: .targets is empty");
        for (i, target) in targets.iter().enumerate() {
            let twhat = format!("{what} .targets[{i}]");
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "{twhat}.datasource.uid (the dashboard's data source variable)"
            );
            let expr = json_str(target, "/expr", &twhat);
            let names = promql_metric_names(expr);
            assert!(!names.is_empty(), "{twhat}.expr {expr:?} queries no metric");
            for name in names {
                let histogram = METRICS
                    .iter()
                    .any(|&(m, kind, _)| m == name && kind == MetricKind::Histogram);
                assert!(
                    !histogram,
                    "{twhat}.expr queries the histogram {name:?} by its bare name: query \
                     {name}_bucket, _sum or _count"
                );
                let metric = exported_metric(&name).unwrap_or_else(|| {
                    panic!(
                        "{twhat}.expr queries {name:?}, which no program exports \
                         (METRICS in this test: {:?})",
                        METRICS.iter().map(|m| m.0).collect::<Vec<_>>()
                    )
                });
                used.insert(metric);
            }
        }
    }
    let unused: Vec<&str> = METRICS
        .iter()
        .map(|m| m.0)
        .filter(|m| !used.contains(m))
        .collect();
    assert!(
        unused.is_empty(),
        "{DASHBOARD}: no panel's .targets[].expr queries {unused:?}"
    );
}
