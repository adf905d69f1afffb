//! Owner and group resolution against the host's `/etc/passwd` and `/etc/group` (under the
//! host root), never the agent container's own: the container's `nobody` need not be the
//! host's.
//!
//! The files are parsed here (name, password, id, ... separated by colons) rather than through
//! NSS, because NSS would consult the container, not the host.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;

use crate::fsops;

/// User and group tables of one host, read fresh for every apply and scan (they are small,
/// and an admin may add a user between two applies).
#[derive(Debug, Default, Clone)]
pub(crate) struct Accounts {
    users: Table,
    groups: Table,
    /// Why a table could not be read, for error messages (a missing file is an empty table).
    problems: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct Table {
    by_name: HashMap<String, u32>,
    by_id: HashMap<u32, String>,
}

impl Table {
    /// Parses `name:password:id:...` lines; comments, blank lines, NIS `+`/`-` lines and lines
    /// with a bad id are skipped. The first entry wins for both directions, as in getpwnam.
    fn parse(text: &str) -> Self {
        let mut table = Self::default();
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            if line.is_empty()
                || line.starts_with('#')
                || line.starts_with('+')
                || line.starts_with('-')
            {
                continue;
            }
            let mut fields = line.split(':');
            let (Some(name), Some(_password), Some(id)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            let Some(id) = parse_id(id) else { continue };
            if name.is_empty() {
                continue;
            }
            table.by_name.entry(name.to_owned()).or_insert(id);
            table.by_id.entry(id).or_insert_with(|| name.to_owned());
        }
        table
    }

    /// A name first (as chown does), then a decimal id.
    fn resolve(&self, spec: &str) -> Option<u32> {
        if spec.is_empty() {
            return None;
        }
        self.by_name.get(spec).copied().or_else(|| parse_id(spec))
    }
}

/// A decimal id; `u32::MAX` is refused because it means "leave unchanged" to chown.
fn parse_id(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|id| *id != u32::MAX)
}

impl Accounts {
    /// Reads `etc/passwd` and `etc/group` below the host root, without following symlinks.
    pub(crate) fn load(host_root: &OwnedFd) -> Self {
        let mut accounts = Self::default();
        match read_small(host_root, "passwd") {
            Ok(text) => accounts.users = Table::parse(&text),
            Err(problem) => accounts.problems.push(problem),
        }
        match read_small(host_root, "group") {
            Ok(text) => accounts.groups = Table::parse(&text),
            Err(problem) => accounts.problems.push(problem),
        }
        accounts
    }

    #[cfg(test)]
    fn from_text(passwd: &str, group: &str) -> Self {
        Self {
            users: Table::parse(passwd),
            groups: Table::parse(group),
            problems: Vec::new(),
        }
    }

    pub(crate) fn uid(&self, owner: &str) -> Option<u32> {
        self.users.resolve(owner)
    }

    pub(crate) fn gid(&self, group: &str) -> Option<u32> {
        self.groups.resolve(group)
    }

    pub(crate) fn user_name(&self, uid: u32) -> String {
        self.users.by_id.get(&uid).cloned().unwrap_or_default()
    }

    pub(crate) fn group_name(&self, gid: u32) -> String {
        self.groups.by_id.get(&gid).cloned().unwrap_or_default()
    }

    /// Appended to "unknown owner" messages, so an unreadable passwd file is not mistaken for
    /// a missing user.
    pub(crate) fn problems(&self) -> String {
        if self.problems.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.problems.join("; "))
        }
    }
}

/// `etc/<name>` below the host root, at most 16 MiB. A missing file reads as empty.
fn read_small(host_root: &OwnedFd, name: &str) -> Result<String, String> {
    let display = format!("/etc/{name}");
    let etc = match fsops::walk(host_root, &["etc".to_owned()]) {
        Ok(fd) => fd,
        Err(fsops::WalkError::Missing { .. }) => return Ok(String::new()),
        Err(err) => return Err(format!("cannot read {display}: {}", err.describe())),
    };
    let file = match fsops::open_regular(&etc, name) {
        Ok(Some(file)) => file,
        Ok(None) => return Ok(String::new()),
        Err(err) => return Err(format!("cannot read {display}: {err}")),
    };
    let mut text = String::new();
    file.take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|err| format!("cannot read {display}: {err}"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # comment\n\
        \n\
        +nis::::::\n\
        seccompuser:x:65534:65534::/nonexistent:/usr/sbin/nologin\n\
        alias:x:65534:65534::/:/bin/false\n\
        1000:x:2000:2000::/:/bin/false\n\
        broken:x:notanumber:0::/:/bin/false\n\
        max:x:4294967295:0::/:/bin/false\n\
        short:x\n";
    const GROUP: &str = "root:x:0:\nseccompgroup:x:65534:\r\nwheel:x:10:root,seccompuser\n";

    fn check(spec: &str, expected: Option<u32>) {
        let accounts = Accounts::from_text(PASSWD, GROUP);
        assert_eq!(accounts.uid(spec), expected, "owner {spec:?}");
    }

    #[test]
    fn resolves_owners() {
        check("root", Some(0));
        check("seccompuser", Some(65534));
        check("alias", Some(65534));
        check("4242", Some(4242));
        check("0", Some(0));
        // A name that looks like a number is a name first, as with chown.
        check("1000", Some(2000));
        check("nobody", None);
        check("", None);
        check("broken", None);
        check("max", None);
        check("4294967295", None);
        check("-1", None);
        check("+5", None);
        check("short", None);
        check("99999999999", None);
    }

    #[test]
    fn resolves_groups_and_names() {
        let accounts = Accounts::from_text(PASSWD, GROUP);
        assert_eq!(accounts.gid("seccompgroup"), Some(65534));
        assert_eq!(accounts.gid("wheel"), Some(10));
        assert_eq!(accounts.gid("nogroup"), None);
        assert_eq!(accounts.user_name(65534), "seccompuser");
        assert_eq!(accounts.user_name(4242), "");
        assert_eq!(accounts.group_name(65534), "seccompgroup");
    }
}
