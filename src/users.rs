//! Users and groups of a root directory that is not the running system's (`/sysroot`, a blank snapshot).
//!
//! NSS would answer for the running system, not for the root being prepared, and is not available in a
//! static initrd binary anyway, so `passwd` and `group` are parsed by hand. Files are opened without
//! following symlinks: the trees they live in may be user-writable.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::config::IdSpec;
use crate::fsx;

/// Reads the small regular file `rel` beneath `root` without following any symlink; empty when it
/// does not exist.
fn read_small_file(root: BorrowedFd<'_>, rel: &Path) -> anyhow::Result<String> {
    const LIMIT: u64 = 16 << 20;
    let flags =
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
    let Some(fd) = fsx::open_beneath_optional(root, rel, flags)? else {
        return Ok(String::new());
    };
    if !fsx::stat_fd(fd.as_fd())?.is_file() {
        anyhow::bail!("not a regular file");
    }
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(LIMIT)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// One line of `passwd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Numeric user id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory as written.
    pub home: String,
}

/// One line of `group`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Numeric group id.
    pub gid: u32,
}

/// The users and groups of one `etc` directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserDb {
    /// Where `passwd`/`group` were read from (for messages), such as `/sysroot/etc`.
    pub origin: PathBuf,
    /// `passwd` lines that parsed.
    pub users: Vec<PasswdEntry>,
    /// `group` lines that parsed.
    pub groups: Vec<GroupEntry>,
}

impl UserDb {
    /// Parses the text of `passwd` and `group`. Malformed lines, comments and NIS `+`/`-` lines are skipped:
    /// a name they would have defined is then reported as not found.
    pub fn parse(origin: &Path, passwd: &str, group: &str) -> UserDb {
        let users = passwd
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 7 || f[0].is_empty() {
                    return None;
                }
                Some(PasswdEntry {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_string(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 3 || f[0].is_empty() {
                    return None;
                }
                Some(GroupEntry {
                    name: f[0].to_string(),
                    gid: f[2].parse().ok()?,
                })
            })
            .collect();
        UserDb {
            origin: origin.to_path_buf(),
            users,
            groups,
        }
    }

    /// Reads `<root>/<etc>/passwd` and `group`, where `etc` is an absolute path inside `root` such as
    /// `/etc` or `/persist/etc`. A missing file counts as empty; a symlink anywhere on the way is an error.
    pub fn load(root: &Path, etc: &Path) -> anyhow::Result<UserDb> {
        use anyhow::Context;
        // The root path itself is trusted (given by the administrator); nothing below it is followed.
        let root_fd = rustix::fs::open(
            root,
            crate::fsx::DIR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .with_context(|| format!("opening the root directory '{}'", root.display()))?;
        let origin = root.join(etc.strip_prefix("/").unwrap_or(etc));
        let read = |name: &str| -> anyhow::Result<String> {
            let shown = origin.join(name);
            let rel = etc.strip_prefix("/").unwrap_or(etc).join(name);
            read_small_file(root_fd.as_fd(), &rel)
                .with_context(|| format!("reading '{}'", shown.display()))
        };
        Ok(UserDb::parse(&origin, &read("passwd")?, &read("group")?))
    }

    /// The user called `name`.
    pub fn user(&self, name: &str) -> Option<&PasswdEntry> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&GroupEntry> {
        self.groups.iter().find(|g| g.name == name)
    }
}

/// Resolves names against several databases in order: the new root's, then the persistent copy.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// Searched in order.
    pub dbs: Vec<UserDb>,
    /// Users given with numeric `uid`/`gid` in `[[persist.users]]`: name, uid, gid.
    pub configured: Vec<(String, u32, Option<u32>)>,
}

impl Resolver {
    /// Reads `<root>/etc` and `<root>/<persist>/etc`; unreadable databases are skipped with a warning,
    /// so that a name they would have defined is reported where it is used.
    pub fn for_root(root: &Path, persist: &crate::config::Persist) -> Resolver {
        let mut dbs = Vec::new();
        for etc in [PathBuf::from("/etc"), persist.path.join("etc")] {
            match UserDb::load(root, &etc) {
                Ok(db) => dbs.push(db),
                Err(e) => tracing::warn!(
                    "reading users of '{}': {e:#}",
                    root.join(etc.strip_prefix("/").unwrap_or(&etc)).display()
                ),
            }
        }
        let configured = persist
            .users
            .iter()
            .filter_map(|u| u.uid.map(|uid| (u.name.clone(), uid, u.gid)))
            .collect();
        Resolver { dbs, configured }
    }

    fn searched(&self, file: &str) -> String {
        let list: Vec<String> = self
            .dbs
            .iter()
            .map(|d| format!("'{}'", d.origin.join(file).display()))
            .collect();
        if list.is_empty() {
            format!("any readable {file}")
        } else {
            list.join(" or ")
        }
    }

    /// The uid of a user given by name or number.
    pub fn uid(&self, spec: &IdSpec) -> Result<u32, String> {
        match spec {
            IdSpec::Id(n) => Ok(*n),
            IdSpec::Name(name) => self
                .dbs
                .iter()
                .find_map(|d| d.user(name).map(|u| u.uid))
                .or_else(|| self.configured.iter().find(|c| &c.0 == name).map(|c| c.1))
                .ok_or_else(|| {
                    format!(
                        "user '{name}' not found in {}: create it, use a number, or give [[persist.users]] a uid",
                        self.searched("passwd")
                    )
                }),
        }
    }

    /// The gid of a group given by name or number.
    pub fn gid(&self, spec: &IdSpec) -> Result<u32, String> {
        match spec {
            IdSpec::Id(n) => Ok(*n),
            IdSpec::Name(name) => self
                .dbs
                .iter()
                .find_map(|d| d.group(name).map(|g| g.gid))
                .ok_or_else(|| {
                    format!(
                        "group '{name}' not found in {}: create it or use a number",
                        self.searched("group")
                    )
                }),
        }
    }

    /// Uid and primary gid of a `[[persist.users]]` user: `uid`/`gid` when given, else `passwd`.
    pub fn account(&self, user: &crate::config::PersistUser) -> Result<(u32, u32), String> {
        let found = self.dbs.iter().find_map(|d| d.user(&user.name));
        match (user.uid, user.gid, found) {
            (Some(uid), Some(gid), _) => Ok((uid, gid)),
            (Some(uid), None, Some(p)) => Ok((uid, p.gid)),
            (None, gid, Some(p)) => Ok((p.uid, gid.unwrap_or(p.gid))),
            (Some(_), None, None) => Err(format!(
                "user '{}' not found in {}, so its primary group is unknown: add `gid`",
                user.name,
                self.searched("passwd")
            )),
            (None, _, None) => Err(format!(
                "user '{}' not found in {}: create it or give [[persist.users]] `uid` and `gid`",
                user.name,
                self.searched("passwd")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group() {
        let db = UserDb::parse(
            Path::new("/r/etc"),
            "# comment\nroot:x:0:0:root:/root:/bin/sh\nalice:x:1000:100:Alice:/home/alice:/bin/bash\n\
             +nis\nbroken:x:notanumber:1::/:/bin/false\nshort:x:1\n",
            "root:x:0:\nusers:x:100:alice\nwheel::10:alice,bob\nbad:x:zz:\n",
        );
        assert_eq!(db.users.len(), 2);
        assert_eq!(
            db.user("alice").map(|u| (u.uid, u.gid, u.home.as_str())),
            Some((1000, 100, "/home/alice"))
        );
        assert_eq!(db.user("broken"), None);
        assert_eq!(db.group("wheel").map(|g| g.gid), Some(10));
        assert_eq!(db.group("bad"), None);
    }

    #[test]
    fn resolver_order_and_messages() {
        let first = UserDb::parse(
            Path::new("/a/etc"),
            "alice:x:1000:100::/h:/s\n",
            "users:x:100:\n",
        );
        let second = UserDb::parse(
            Path::new("/b/etc"),
            "alice:x:2000:200::/h:/s\nbob:x:1001:1001::/h:/s\n",
            "",
        );
        let r = Resolver {
            dbs: vec![first, second],
            configured: vec![("carol".into(), 3000, Some(300))],
        };
        assert_eq!(r.uid(&IdSpec::Name("alice".into())), Ok(1000));
        assert_eq!(r.uid(&IdSpec::Name("bob".into())), Ok(1001));
        assert_eq!(r.uid(&IdSpec::Name("carol".into())), Ok(3000));
        assert_eq!(r.uid(&IdSpec::Id(7)), Ok(7));
        let e = r.uid(&IdSpec::Name("dave".into())).unwrap_err();
        assert!(
            e.contains("'dave'") && e.contains("'/a/etc/passwd' or '/b/etc/passwd'"),
            "{e}"
        );
        assert_eq!(r.gid(&IdSpec::Name("users".into())), Ok(100));
        assert!(r.gid(&IdSpec::Name("nogroup".into())).is_err());
    }
}
