//! Node selectors: a label map where every entry must hold; a value of `""` means "the key
//! exists" (the Shturval platform's rule for `nodeconfigselector`).

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// A node selector, keys sorted.
pub type Selector = BTreeMap<String, String>;

/// A node's labels.
pub type Labels = BTreeMap<String, String>;

/// True when every selector entry holds on `labels`.
pub fn matches(selector: &Selector, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| match labels.get(k) {
        Some(actual) => v.is_empty() || actual == v,
        None => false,
    })
}

/// Parse `k=v[,k=v]...`; `k=` or a bare `k` selects nodes that have the key. Keys and values
/// follow Kubernetes label syntax.
pub fn parse(text: &str) -> Result<Selector> {
    let mut out = Selector::new();
    for term in text.split(',').map(str::trim) {
        if term.is_empty() {
            return Err(Error::invalid(format!(
                "selector \"{text}\" has an empty term (expected k=v[,k=v])"
            )));
        }
        let (key, value) = term.split_once('=').unwrap_or((term, ""));
        let (key, value) = (key.trim(), value.trim());
        check_label_key(key)?;
        check_label_value(value)?;
        if out.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(Error::invalid(format!(
                "selector \"{text}\" names key \"{key}\" twice"
            )));
        }
    }
    Ok(out)
}

/// The keys of `known` a selector key `key` that matches nothing was probably meant as,
/// nearest first: those with the same name under another prefix (`os` for
/// `kubernetes.io/os`), then those within two edits (`zome` for `zone`). At most three.
pub fn nearest_keys<'a>(key: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let base = |k: &str| k.rsplit('/').next().unwrap_or(k).to_ascii_lowercase();
    let wanted = base(key);
    // Nearest by name, then by the whole key.
    let mut scored: Vec<(usize, usize, &str)> = known
        .into_iter()
        .filter(|k| *k != key)
        .filter_map(|k| {
            let d = edit_distance(&wanted, &base(k));
            (d == 0 || (d <= 2 && d < wanted.len())).then(|| (d, edit_distance(key, k), k))
        })
        .collect();
    scored.sort_unstable();
    scored.dedup();
    scored
        .into_iter()
        .take(3)
        .map(|(_, _, k)| k.to_owned())
        .collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Render a selector as `k=v,k2=v2` (the inverse of [`parse`]).
pub fn format(selector: &Selector) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

fn check_name(part: &str, what: &str, whole: &str) -> Result<()> {
    let ok = !part.is_empty()
        && part.len() <= 63
        && part.chars().all(is_name_char)
        && part.starts_with(|c: char| c.is_ascii_alphanumeric())
        && part.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} \"{whole}\" is not a valid label {what} (at most 63 of a-z, A-Z, 0-9, '-', '_', '.', starting and ending alphanumeric)"
        )))
    }
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn check_label_key(key: &str) -> Result<()> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if !seccomp_profile::name::is_dns_subdomain(prefix) {
                return Err(Error::invalid(format!(
                    "label key \"{key}\" has an invalid prefix (a DNS subdomain is expected before '/')"
                )));
            }
            name
        }
        None => key,
    };
    check_name(name, "key", key)
}

/// A label value: empty, or a label name.
pub fn check_label_value(value: &str) -> Result<()> {
    if value.is_empty() {
        return Ok(());
    }
    check_name(value, "value", value)
}

#[cfg(test)]
mod nearest {
    use super::nearest_keys;

    #[test]
    fn a_key_without_its_prefix_or_with_a_typo_names_the_keys_that_exist() {
        let known = [
            "kubernetes.io/os",
            "topology.kubernetes.io/zone",
            "zone",
            "pool",
        ];
        assert_eq!(nearest_keys("os", known), ["kubernetes.io/os"]);
        assert_eq!(
            nearest_keys("zome", known),
            ["zone", "topology.kubernetes.io/zone"]
        );
        assert_eq!(
            nearest_keys("kubernetes.io/zone", known),
            ["topology.kubernetes.io/zone", "zone"]
        );
        assert!(
            nearest_keys("gpu", known).is_empty(),
            "nothing near: nothing named"
        );
        // Short keys are not "near" everything of their length.
        assert!(nearest_keys("ab", ["xy"]).is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn matching() {
        let node = labels(&[("kubernetes.io/os", "linux"), ("zone", "a")]);
        assert!(matches(&parse("kubernetes.io/os=linux").unwrap(), &node));
        assert!(matches(
            &parse("kubernetes.io/os=linux,zone=a").unwrap(),
            &node
        ));
        assert!(!matches(
            &parse("kubernetes.io/os=linux,zone=b").unwrap(),
            &node
        ));
        assert!(
            matches(&parse("zone=").unwrap(), &node),
            "empty value: key exists"
        );
        assert!(
            matches(&parse("zone").unwrap(), &node),
            "bare key: key exists"
        );
        assert!(!matches(&parse("pool=").unwrap(), &node));
        assert!(
            matches(&Selector::new(), &node),
            "empty selector matches every node"
        );
    }

    #[test]
    fn parse_errors_name_the_problem() {
        for (bad, needle) in [
            ("", "empty term"),
            ("a=b,,c=d", "empty term"),
            ("a=b,a=c", "twice"),
            ("Bad Key=x", "not a valid label key"),
            ("k=has space", "not a valid label value"),
            ("-k=v", "not a valid label key"),
            ("UPPER.example/k=v", "invalid prefix"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        assert_eq!(format(&parse(" b=2 , a=1,c=").unwrap()), "a=1,b=2,c=");
    }
}
