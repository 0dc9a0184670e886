//! Path and name rules shared by the sections: normalised paths, places that cannot be persisted,
//! user and group names, octal modes.

use std::path::{Path, PathBuf};

/// Paths the kernel or the init system owns: persisting them makes no sense and would break the boot.
pub const FORBIDDEN_PREFIXES: [&str; 4] = ["/proc", "/sys", "/dev", "/run"];

/// A user or group name as `useradd` accepts it (plus the `$` of machine accounts).
pub(super) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('-')
        && name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphanumeric()
                || c == '_'
                || c == '.'
                || c == '-'
                || (c == '$' && i == name.len() - 1)
        });
    if ok {
        Ok(())
    } else {
        Err(format!("'{name}' is not a valid user or group name"))
    }
}

/// Parses an octal mode string: 3 or 4 octal digits (`"755"`, `"0700"`, `"2770"`).
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if !(3..=4).contains(&digits.len()) || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!(
            "'{s}' is not an octal mode: write 3 or 4 octal digits, such as \"0755\""
        ));
    }
    u32::from_str_radix(digits, 8).map_err(|e| format!("'{s}': {e}"))
}

/// Checks that `s` is an absolute, normalised path and returns it.
pub fn normalised_absolute(s: &str) -> Result<PathBuf, String> {
    if !s.starts_with('/') {
        return Err(format!(
            "'{s}' is not absolute: write it from '/', such as '/{s}'"
        ));
    }
    if s == "/" {
        return Ok(PathBuf::from("/"));
    }
    check_components(s, s.get(1..).unwrap_or(""))?;
    Ok(PathBuf::from(s))
}

/// Checks that `s` is a relative, normalised path (a user's entry) and returns it.
pub fn normalised_relative(s: &str) -> Result<PathBuf, String> {
    if s.starts_with('/') {
        return Err(format!("'{s}' must be relative"));
    }
    if s.is_empty() {
        return Err("an empty path names nothing".into());
    }
    check_components(s, s)?;
    Ok(PathBuf::from(s))
}

fn check_components(whole: &str, rest: &str) -> Result<(), String> {
    if whole.contains('\0') {
        return Err("a path cannot contain a NUL byte".into());
    }
    let mut clean: Vec<&str> = Vec::new();
    let mut normal = true;
    for c in rest.split('/') {
        match c {
            ".." => {
                return Err(format!(
                    "'{whole}' contains '..': write the path without it"
                ));
            }
            "" | "." => normal = false,
            c if c.len() > 255 => {
                return Err(format!("'{whole}' has a component longer than 255 bytes"));
            }
            c => clean.push(c),
        }
    }
    if !normal {
        let lead = if whole.starts_with('/') { "/" } else { "" };
        return Err(format!(
            "'{whole}' is not normalised: write '{lead}{}'",
            clean.join("/")
        ));
    }
    Ok(())
}

pub(super) fn forbidden_prefix(path: &Path) -> Option<&'static str> {
    FORBIDDEN_PREFIXES.into_iter().find(|p| path.starts_with(p))
}
