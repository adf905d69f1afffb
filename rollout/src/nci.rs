//! The Shturval `NodeConfigItem` (`node.shturval.tech/v1beta2`, cluster-scoped) as plain
//! serde types, and rendering a rollout target into one.
//!
//! Field names and order follow the platform's documentation and the seed example exactly
//! (`spec.files[].{content,group,mode,owner,path,type}`, `spec.nodeconfigselector`,
//! `spec.priority`). kube is not used here: the `k8s` module maps these types onto the API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use seccomp_profile::name;

use crate::error::{Error, Result};
use crate::selector::{self, Selector};

/// API group of NodeConfigItems.
pub const GROUP: &str = "node.shturval.tech";
/// API version of NodeConfigItems we write.
pub const VERSION: &str = "v1beta2";
/// `apiVersion` field value.
pub const API_VERSION: &str = "node.shturval.tech/v1beta2";
/// `kind` field value.
pub const KIND: &str = "NodeConfigItem";
/// Plural resource name.
pub const PLURAL: &str = "nodeconfigitems";

/// Where kubelet looks for `Localhost` seccomp profiles.
pub const DEFAULT_ROOT: &str = "/var/lib/kubelet/seccomp";
/// Default NCI priority.
pub const DEFAULT_PRIORITY: i32 = 100;
/// Default file mode.
pub const DEFAULT_MODE: u32 = 0o644;

/// `app.kubernetes.io/managed-by` value on every object we emit; pruning lists by it.
pub const MANAGER: &str = "seccomp-distributor";
/// Label keys we put on emitted objects.
pub mod labels {
    /// Who manages the object.
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    /// Profile name (shortened with a hash suffix when over 63 characters).
    pub const PROFILE: &str = "seccomp-distributor.io/profile";
    /// Profile version number.
    pub const VERSION: &str = "seccomp-distributor.io/version";
    /// Rollout id, when the object comes from a rollout.
    pub const ROLLOUT: &str = "seccomp-distributor.io/rollout";
    /// Full profile name (an annotation: label values are limited to 63 characters).
    pub const PROFILE_ANNOTATION: &str = "seccomp-distributor.io/profile-name";
    /// Profile digest (an annotation).
    pub const DIGEST_ANNOTATION: &str = "seccomp-distributor.io/digest";
}

/// A NodeConfigItem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfigItem {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// Always [`KIND`].
    pub kind: String,
    /// Name, labels, annotations.
    pub metadata: Metadata,
    /// What to write where.
    pub spec: Spec,
}

/// The subset of `ObjectMeta` we set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Cluster-scoped object name (a DNS-1123 subdomain).
    pub name: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `spec` of a NodeConfigItem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// Files and directories, in order.
    pub files: Vec<FileSpec>,
    /// Nodes whose labels match (an empty value: the key exists).
    pub nodeconfigselector: Selector,
    /// Higher wins where two NCIs write the same path.
    pub priority: i32,
}

/// Whether an entry is a file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileType {
    /// A directory.
    Directory,
    /// A regular file with `content`.
    File,
}

/// One entry of `spec.files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    /// The file's exact text (files only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Group name or numeric id.
    pub group: String,
    /// Quoted 4-digit octal, e.g. `"0644"`.
    pub mode: String,
    /// Owner name or numeric id.
    pub owner: String,
    /// Absolute path; directories end with `/` as in the platform's examples.
    pub path: String,
    /// `file` or `directory`.
    #[serde(rename = "type")]
    pub kind: FileType,
}

/// Where and how a profile lands on nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Nodes to write to.
    pub selector: Selector,
    /// Priority against other NCIs writing the same path.
    pub priority: i32,
    /// File path; `None` means `/var/lib/kubelet/seccomp/<profile>.json`.
    pub path: Option<String>,
    /// Permission bits.
    pub mode: u32,
    /// Owner name or numeric id.
    pub owner: String,
    /// Group name or numeric id.
    pub group: String,
}

impl Target {
    /// The defaults of DESIGN section 4 for a selector.
    pub fn new(selector: Selector) -> Self {
        Target {
            selector,
            priority: DEFAULT_PRIORITY,
            path: None,
            mode: DEFAULT_MODE,
            owner: "root".to_owned(),
            group: "root".to_owned(),
        }
    }
}

impl Target {
    /// The target an NCI was rendered from (its file entry's path, mode and ownership).
    pub fn of(nci: &NodeConfigItem) -> Result<Self> {
        let file = nci
            .spec
            .files
            .iter()
            .find(|f| f.kind == FileType::File)
            .ok_or_else(|| {
                Error::invalid(format!("NCI \"{}\" has no file entry", nci.metadata.name))
            })?;
        Ok(Target {
            selector: nci.spec.nodeconfigselector.clone(),
            priority: nci.spec.priority,
            path: Some(file.path.clone()),
            mode: parse_mode(&file.mode)?,
            owner: file.owner.clone(),
            group: file.group.clone(),
        })
    }
}

impl NodeConfigItem {
    /// The same object, labelled as written by `rollout_id` (a rollback reuses an older
    /// rollout's content as is).
    pub fn relabelled(&self, rollout_id: &str) -> Self {
        let mut nci = self.clone();
        nci.metadata
            .labels
            .insert(labels::ROLLOUT.to_owned(), label_value(rollout_id));
        nci
    }
}

/// One profile version to render.
#[derive(Debug, Clone, Copy)]
pub struct ProfileRef<'a> {
    /// Profile name (a DNS-1123 subdomain).
    pub name: &'a str,
    /// Version number.
    pub version: u64,
    /// The version's exact bytes.
    pub content: &'a [u8],
}

/// Parse a mode given as octal text: `644`, `0644`, `0o644`. Refuses bits beyond `0o7777`.
pub fn parse_mode(text: &str) -> Result<u32> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    let valid =
        (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
    if !valid {
        return Err(Error::invalid(format!(
            "mode \"{text}\" is not an octal file mode like 0644"
        )));
    }
    u32::from_str_radix(digits, 8)
        .map_err(|_| Error::invalid(format!("mode \"{text}\" is not octal")))
}

/// A mode as the NCI writes it: 4 octal digits.
pub fn format_mode(mode: u32) -> String {
    format!("{mode:04o}")
}

/// A user or group as NCIs accept it: a name (`[a-z_][a-z0-9_.-]*`, at most 32) or an id.
pub fn check_principal(what: &str, value: &str) -> Result<()> {
    let is_id = !value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit());
    let is_name = !value.is_empty()
        && value.len() <= 32
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b));
    if is_id || is_name {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} \"{value}\" is neither a user/group name nor a numeric id"
        )))
    }
}

/// An absolute, normal file path: no `.`/`..` components, no empty components, no trailing
/// `/`, no NUL.
pub fn check_file_path(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("path \"{path}\" {why}")));
    if !path.starts_with('/') {
        return bad("is not absolute");
    }
    if path.ends_with('/') {
        return bad("ends with '/': it must name a file");
    }
    if path.contains('\0') {
        return bad("contains a NUL byte");
    }
    if path[1..]
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("has an empty, '.' or '..' component");
    }
    Ok(())
}

/// A label value for a possibly long name: the name itself when it fits in 63 characters,
/// else a prefix and a hash (the full name goes into an annotation).
fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_owned();
    }
    let hash = hex::encode(Sha256::digest(name.as_bytes()));
    let prefix = name[..50].trim_end_matches(['.', '-']);
    format!("{prefix}-{}", &hash[..12])
}

/// The default NCI name of a profile: `seccomp-<profile>`; when that is not a valid name
/// (the first label over 63 characters, or the whole over 253), `seccomp-<start of the first
/// label>-<hash>`, the hash keeping names of different profiles apart.
pub fn default_nci_name(profile: &str) -> String {
    let name = format!("seccomp-{profile}");
    if name::is_dns_subdomain(&name) {
        return name;
    }
    let hash = hex::encode(Sha256::digest(profile.as_bytes()));
    let first = profile.split('.').next().unwrap_or(profile);
    let start = first[..first.len().min(40)].trim_end_matches('-');
    format!("seccomp-{start}-{}", &hash[..12])
}

/// Render the NCI that puts `profile` on the nodes `target` selects.
pub fn render(
    profile: ProfileRef<'_>,
    target: &Target,
    nci_name: Option<&str>,
    rollout_id: Option<&str>,
) -> Result<NodeConfigItem> {
    name::check_profile_name(profile.name).map_err(|e| {
        Error::invalid(format!(
            "profile name {} is not valid: {e}",
            name::display(profile.name)
        ))
    })?;
    let object_name = nci_name.map_or_else(|| default_nci_name(profile.name), str::to_owned);
    name::check_dns_subdomain(&object_name).map_err(|e| {
        Error::invalid(format!(
            "NCI name {} is not valid: {e}",
            name::display(&object_name)
        ))
    })?;
    for (k, v) in &target.selector {
        selector::check_label_key(k)?;
        selector::check_label_value(v)?;
    }
    if target.mode > 0o7777 {
        return Err(Error::invalid(format!(
            "mode {:o} has bits beyond 07777",
            target.mode
        )));
    }
    check_principal("owner", &target.owner)?;
    check_principal("group", &target.group)?;
    let path = target
        .path
        .clone()
        .unwrap_or_else(|| format!("{DEFAULT_ROOT}/{}.json", profile.name));
    check_file_path(&path)?;
    let content = std::str::from_utf8(profile.content).map_err(|_| {
        Error::invalid(format!(
            "profile \"{}\" version {} is not UTF-8 text",
            profile.name, profile.version
        ))
    })?;
    let dir = match path.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => format!("{}/", &path[..i]),
    };

    let mut labels = BTreeMap::new();
    labels.insert(labels::MANAGED_BY.to_owned(), MANAGER.to_owned());
    labels.insert(labels::PROFILE.to_owned(), label_value(profile.name));
    labels.insert(labels::VERSION.to_owned(), profile.version.to_string());
    if let Some(id) = rollout_id {
        labels.insert(labels::ROLLOUT.to_owned(), label_value(id));
    }
    let mut annotations = BTreeMap::new();
    annotations.insert(
        labels::PROFILE_ANNOTATION.to_owned(),
        profile.name.to_owned(),
    );
    annotations.insert(
        labels::DIGEST_ANNOTATION.to_owned(),
        seccomp_profile::digest(profile.content),
    );

    // The directory entry exactly as in the platform's example (root:root, "0644").
    let directory = FileSpec {
        content: None,
        group: "root".to_owned(),
        mode: format_mode(DEFAULT_MODE),
        owner: "root".to_owned(),
        path: dir,
        kind: FileType::Directory,
    };
    let file = FileSpec {
        content: Some(content.to_owned()),
        group: target.group.clone(),
        mode: format_mode(target.mode),
        owner: target.owner.clone(),
        path,
        kind: FileType::File,
    };
    Ok(NodeConfigItem {
        api_version: API_VERSION.to_owned(),
        kind: KIND.to_owned(),
        metadata: Metadata {
            name: object_name,
            labels,
            annotations,
        },
        spec: Spec {
            files: vec![directory, file],
            nodeconfigselector: target.selector.clone(),
            priority: target.priority,
        },
    })
}

impl NodeConfigItem {
    /// The object as YAML, ready for `kubectl apply -f -`.
    pub fn to_yaml(&self) -> Result<String> {
        serde_yaml_ng::to_string(self).map_err(|e| Error::Encoding(format!("yaml: {e}")))
    }

    /// The object as pretty JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::Encoding(format!("json: {e}")))
    }

    /// True when we emitted it (by the managed-by label).
    pub fn is_ours(&self) -> bool {
        self.metadata
            .labels
            .get(labels::MANAGED_BY)
            .map(String::as_str)
            == Some(MANAGER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("644").unwrap(), 0o644);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert_eq!(parse_mode("4755").unwrap(), 0o4755);
        for bad in ["", "0888", "64", "07777 ", "12345", "rw-r--r--", "0x644"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
        assert_eq!(format_mode(0o644), "0644");
        assert_eq!(format_mode(0o4755), "4755");
    }

    #[test]
    fn names_and_paths() {
        assert!(check_file_path("/var/lib/kubelet/seccomp/a.json").is_ok());
        for bad in ["rel.json", "/a/../b", "/a/./b", "/a//b", "/a/", "/a\0b"] {
            assert!(check_file_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_principal("owner", "root").is_ok());
        assert!(check_principal("owner", "65534").is_ok());
        assert!(check_principal("owner", "Root").is_err());
        assert!(check_principal("owner", "").is_err());
        assert!(check_principal("owner", "a b").is_err());
    }

    #[test]
    fn long_names_stay_valid_labels() {
        let long = "p".repeat(200);
        let v = label_value(&long);
        assert!(v.len() <= 63);
        assert!(crate::selector::check_label_value(&v).is_ok());
        assert_ne!(label_value(&format!("{long}x")), v);
        // Profile names at the limits: a 63-character label, 250 characters in all.
        let label = "q".repeat(63);
        let full = ["a", "b", "c"].map(|c| c.repeat(63)).join(".") + "." + &"d".repeat(58);
        assert_eq!(full.len(), name::MAX_PROFILE_NAME_LEN);
        let names: Vec<String> = [label.as_str(), full.as_str(), "web"]
            .iter()
            .map(|p| default_nci_name(p))
            .collect();
        for n in &names {
            assert!(name::is_dns_subdomain(n), "{n}");
        }
        assert_eq!(names[2], "seccomp-web");
        assert_ne!(names[0], names[1]);
    }

    #[test]
    fn render_defaults_and_errors() {
        let profile = ProfileRef {
            name: "web",
            version: 3,
            content: br#"{"defaultAction":"SCMP_ACT_LOG"}"#,
        };
        let sel = crate::selector::parse("kubernetes.io/os=linux").unwrap();
        let nci = render(profile, &Target::new(sel.clone()), None, Some("r-1")).unwrap();
        assert_eq!(nci.metadata.name, "seccomp-web");
        assert_eq!(nci.spec.priority, 100);
        assert_eq!(nci.spec.files[0].path, "/var/lib/kubelet/seccomp/");
        assert_eq!(nci.spec.files[1].path, "/var/lib/kubelet/seccomp/web.json");
        assert_eq!(nci.spec.files[1].mode, "0644");
        assert_eq!(nci.metadata.labels[labels::VERSION], "3");
        assert_eq!(nci.metadata.labels[labels::ROLLOUT], "r-1");
        assert!(nci.is_ours());

        let mut t = Target::new(sel);
        t.owner = "Not Valid".into();
        assert!(
            render(profile, &t, None, None)
                .unwrap_err()
                .to_string()
                .contains("owner")
        );
        let mut t = Target::new(Selector::new());
        t.path = Some("relative.json".into());
        assert!(render(profile, &t, None, None).is_err());
        let t = Target::new(Selector::new());
        assert!(
            render(profile, &t, Some("Bad_Name"), None)
                .unwrap_err()
                .to_string()
                .contains("NCI name")
        );
        let bad = ProfileRef {
            name: "web",
            version: 1,
            content: b"\xff",
        };
        assert!(render(bad, &t, None, None).is_err());
    }
}
