//! Who this node is: its name (a flag, `NODE_NAME`, or the kernel's hostname) and its labels
//! (`k=v` flags and a labels file as the Kubernetes Downward API writes it).
//!
//! The distributor matches NCI selectors against these labels and refuses a `Hello` whose
//! node name is not a DNS-1123 subdomain; checking here too turns a typo into a clear error at
//! start-up instead of a refused stream retried forever.

use std::collections::BTreeMap;
use std::path::Path;

use seccomp_profile::name;

use crate::error::{Error, Result};

/// Where the hostname is looked up, in order, when no node name is given.
const HOSTNAME_FILES: [&str; 2] = ["/proc/sys/kernel/hostname", "/etc/hostname"];

/// The kernel's hostname (`/proc/sys/kernel/hostname`, else `/etc/hostname`), lowercased as
/// Kubernetes names its nodes; `None` when neither file holds one.
pub fn hostname() -> Option<String> {
    HOSTNAME_FILES.iter().find_map(|file| {
        let text = std::fs::read_to_string(file).ok()?;
        let name = text.trim();
        (!name.is_empty()).then(|| name.to_ascii_lowercase())
    })
}

/// Checks that `name` is a DNS-1123 subdomain, as Kubernetes node names are (the rules are
/// `seccomp_profile::name`'s, the same the distributor applies to a `Hello`).
pub fn check_node_name(name: &str) -> Result<()> {
    name::check_dns_subdomain(name).map_err(|reason| {
        Error::Config(format!(
            "node name {} is not a DNS-1123 subdomain: {reason}",
            name::display(name)
        ))
    })
}

/// Parses one `key=value` label (the value may be empty; the key may not).
pub fn parse_label(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("label {text:?} is not of the form key=value"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("label {text:?} has an empty key"));
    }
    Ok((key.to_owned(), value.trim().to_owned()))
}

/// Parses a labels file: one `key=value` per line, blank lines and `#` comments ignored. A
/// value in double quotes is unquoted, with the escapes the Downward API writes (`\"`, `\\`,
/// `\n`, `\t`), so `app="web"` and `app=web` mean the same.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = parse_label(line).map_err(|e| format!("line {}: {e}", number + 1))?;
        let value = unquote(&value).map_err(|e| format!("line {}: {e}", number + 1))?;
        labels.insert(key, value);
    }
    Ok(labels)
}

/// Reads and parses a labels file (see [`parse_labels`]).
pub fn read_labels_file(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read labels file {path:?}: {e}")))?;
    parse_labels(&text).map_err(|e| Error::Config(format!("labels file {path:?}: {e}")))
}

fn unquote(value: &str) -> Result<String, String> {
    let Some(inner) = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    else {
        return Ok(value.to_owned());
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            other => {
                return Err(format!(
                    "unsupported escape \\{} in {value}",
                    other.map(String::from).unwrap_or_default()
                ));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::{check_node_name, parse_label, parse_labels};

    #[test]
    fn node_names_are_dns_subdomains() {
        // The rules themselves are tested in `seccomp_profile::name`.
        assert!(check_node_name("ip-10-0-0-1.ec2.internal").is_ok());
        let err = check_node_name("Node-A").unwrap_err().to_string();
        assert!(
            err.contains(
                "node name \"Node-A\" is not a DNS-1123 subdomain: character 'N' at byte 0"
            ),
            "{err}"
        );
        assert!(check_node_name(&"a".repeat(64)).is_err());
    }

    #[test]
    fn labels_parse_from_flags_and_downward_api_files() {
        assert_eq!(
            parse_label("kubernetes.io/os=linux").unwrap(),
            ("kubernetes.io/os".to_owned(), "linux".to_owned())
        );
        assert_eq!(
            parse_label("empty=").unwrap(),
            ("empty".to_owned(), String::new())
        );
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("=v").is_err());

        let file = "# from the Downward API\napp=\"web\"\n\nkubernetes.io/os=linux\nq=\"a\\\"b\"\n";
        let labels = parse_labels(file).unwrap();
        assert_eq!(labels["app"], "web");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["q"], "a\"b");
        let err = parse_labels("ok=1\nbroken\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}
