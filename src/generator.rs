//! tabula as its own systemd generator (`tabula-generator`, a link to the binary, dispatched on
//! `argv[0]`): the initrd's unit dependencies come from the same config parser as the boot step.
//!
//! It writes two drop-ins into the generator's normal directory:
//! - `tabula-rollback.service.d/50-tabula-device.conf`: `Wants=` + `After=` the `.device` unit of
//!   `[layout] device`, so the rollback waits for udev; a device that never appears ends in tabula's own
//!   bounded wait and `on_failure` policy, never in a failed dependency (hence `Wants=`, not `Requires=`,
//!   and no timeout on the device unit, which other units share);
//! - `tabula-persist.service.d/50-tabula-mounts.conf`: `RequiresMountsFor=` every allowlist target and
//!   the persistent storage under `/sysroot`, so that mounts from the new root's fstab (`x-initrd.mount`)
//!   happen before the binds, never on top of them.
//!
//! Unit names are escaped exactly as `systemd-escape --path` does, and `UUID=`/`LABEL=` become the
//! `/dev/disk/by-*` links udev makes (their names encoded as blkid encodes them).

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{Config, DeviceSpec};

/// The name the generator link has (`/usr/lib/systemd/system-generators/tabula-generator`).
pub const GENERATOR_NAME: &str = "tabula-generator";

/// Where the new root is mounted in a systemd initrd.
pub const SYSROOT: &str = "/sysroot";

/// Longest unit name systemd accepts (`UNIT_NAME_MAX - 1`).
const UNIT_NAME_MAX: usize = 255;

/// One file the generator writes, relative to its output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// Path relative to the output directory.
    pub path: PathBuf,
    /// The whole text.
    pub text: String,
}

/// Escapes a string the way systemd's `unit_name_escape` does: `/` becomes `-`; every byte other than
/// ASCII alphanumerics, `:`, `_` and `.` (a leading `.` too) becomes `\xNN`.
pub fn unit_name_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, b) in s.bytes().enumerate() {
        match b {
            b'/' => out.push('-'),
            b'.' if i == 0 => out.push_str("\\x2e"),
            b if b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.') => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// The unit name prefix `systemd-escape --path` prints for `path` (without a suffix); `None` when
/// systemd would refuse it (a `..` component).
pub fn escape_path(path: &Path) -> Option<String> {
    // systemd's path_simplify: no empty or `.` components; `..` is not normalised, so refused.
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => parts.push(n.to_str()?),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if parts.is_empty() {
        return Some("-".to_string());
    }
    Some(unit_name_escape(&parts.join("/")))
}

pub use crate::persist::prepare::encode_devnode_name;

/// The device node udev creates for `spec`.
pub fn device_node(spec: &DeviceSpec) -> PathBuf {
    match spec {
        DeviceSpec::Path(p) => p.clone(),
        DeviceSpec::Uuid(u) => {
            PathBuf::from(format!("/dev/disk/by-uuid/{}", encode_devnode_name(u)))
        }
        DeviceSpec::Label(l) => {
            PathBuf::from(format!("/dev/disk/by-label/{}", encode_devnode_name(l)))
        }
    }
}

/// The `.device` unit for `spec`, or `None` when its name cannot be a unit name (too long).
pub fn device_unit(spec: &DeviceSpec) -> Option<String> {
    let name = format!("{}.device", escape_path(&device_node(spec))?);
    (name.len() <= UNIT_NAME_MAX).then_some(name)
}

/// Quotes a path for a unit-file setting that takes a list of paths: `%` is a specifier, `"` and `\`
/// are escaped inside double quotes. `None` for a path systemd cannot hold on one line.
fn quote_unit_path(p: &Path) -> Option<String> {
    let s = p.to_str()?;
    if s.chars().any(char::is_control) {
        return None;
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '%' => out.push_str("%%"),
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push('"');
    Some(out)
}

/// The drop-ins for `config`, in a fixed order.
pub fn units(config: &Config) -> Vec<UnitFile> {
    let source = format!("from {}", config.file.display().to_string().escape_debug());
    let mut out = Vec::new();
    let device = &config.layout.device;
    let timeout = config.layout.device_timeout.as_secs() + 300;
    let mut text = format!(
        "# Written by tabula-generator {source}.\n\
         # The rollback waits for the device, but a device that never appears does not fail it: tabula\n\
         # then waits up to device_timeout itself and applies [boot] on_failure.\n[Unit]\n"
    );
    match device_unit(device) {
        Some(unit) => {
            let shown = device.to_string().escape_debug().to_string();
            let _ = writeln!(
                text,
                "# [layout] device = {shown}\nWants={unit}\nAfter={unit}"
            );
        }
        None => {
            let _ = writeln!(
                text,
                "# [layout] device = {}: no unit name for it; tabula waits for it itself",
                device.to_string().escape_debug()
            );
        }
    }
    let _ = write!(
        text,
        "\n[Service]\n# tabula's own bounded wait (device_timeout) plus room for the work.\nTimeoutStartSec={timeout}\n"
    );
    out.push(UnitFile {
        path: PathBuf::from("tabula-rollback.service.d/50-tabula-device.conf"),
        text,
    });

    let mut text = format!(
        "# Written by tabula-generator {source}.\n\
         # Persist binds into the new root after every mount under its targets (fstab x-initrd.mount\n\
         # entries included, known after initrd-parse-etc.service), so none lands on top of a bind.\n[Unit]\n"
    );
    let sysroot = Path::new(SYSROOT);
    let mut paths = vec![config.persist.path.clone()];
    paths.extend(config.persist.entries().iter().map(|e| e.target()));
    for p in paths {
        let full = sysroot.join(p.strip_prefix("/").unwrap_or(&p));
        match quote_unit_path(&full) {
            Some(q) => {
                let _ = writeln!(text, "RequiresMountsFor={q}");
            }
            None => {
                let _ = writeln!(
                    text,
                    "# skipped (not expressible in a unit file): {}",
                    full.display().to_string().escape_debug()
                );
            }
        }
    }
    out.push(UnitFile {
        path: PathBuf::from("tabula-persist.service.d/50-tabula-mounts.conf"),
        text,
    });
    out
}

/// Writes the drop-ins for the config at `config_path` into `dir` (the generator's normal directory).
pub fn write_units(config_path: &Path, dir: &Path) -> Result<Vec<UnitFile>> {
    let config = Config::load(config_path)?;
    let files = units(&config);
    for f in &files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating '{}'", parent.display()))?;
        }
        std::fs::write(&path, &f.text).with_context(|| format!("writing '{}'", path.display()))?;
    }
    Ok(files)
}

/// `tabula-generator NORMAL [EARLY LATE]`, as systemd calls it. In an initrd (`SYSTEMD_IN_INITRD`,
/// else `/etc/initrd-release`) it writes the boot drop-ins; on the running system, the path unit that
/// syncs `how = "copy"` entries back (nothing when there are none), so it follows the configuration at
/// every boot and `daemon-reload`. The config is `TABULA_CONFIG` or the default. Errors go to stderr
/// (systemd sends them to the kernel log); the exit status is 0 or 1.
pub fn main_from_args(args: &[std::ffi::OsString]) -> u8 {
    // systemd ≥ 251 tells generators where they run; older ones: the initrd's marker file.
    let in_initrd = match std::env::var("SYSTEMD_IN_INITRD") {
        Ok(v) => v == "1",
        Err(_) => Path::new("/etc/initrd-release").exists(),
    };
    let Some(dir) = args.get(1) else {
        eprintln!("tabula-generator: usage: tabula-generator NORMAL-DIR [EARLY-DIR LATE-DIR]");
        return 1;
    };
    let config = std::env::var_os("TABULA_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_PATH));
    let written = if in_initrd {
        write_units(&config, Path::new(dir)).map(drop)
    } else if !config.exists() {
        // Installed but not configured yet: nothing to watch.
        Ok(())
    } else {
        Config::load(&config)
            .map_err(anyhow::Error::from)
            .and_then(|c| {
                crate::persist::write_units(&crate::persist::copy_path_units(&c), Path::new(dir))
            })
            .map(drop)
    };
    match written {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("tabula-generator: {e:#}");
            1
        }
    }
}

/// Whether `argv0` names the generator link.
pub fn is_generator_name(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0)
        .components()
        .next_back()
        .is_some_and(|c| matches!(c, Component::Normal(n) if n == GENERATOR_NAME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Device specs whose unit names must equal `systemd-escape --path --suffix=device`'s.
    fn specs() -> Vec<String> {
        let mut v: Vec<String> = [
            "/dev/vda",
            "/dev/vda2",
            "/dev/sda1",
            "/dev/nvme0n1p2",
            "/dev/mmcblk0p3",
            "/dev/mapper/cryptroot",
            "/dev/mapper/vg0-root",
            "/dev/mapper/vg--with--dashes-lv--root",
            "/dev/mapper/luks-0123abcd-89ab-cdef-0123-456789abcdef",
            "/dev/md/root",
            "/dev/md127",
            "/dev/dm-0",
            "/dev/disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z1NB0K123456A-part2",
            "/dev/disk/by-id/nvme-eui.0025388b91b2c3d4-part2",
            "/dev/disk/by-path/pci-0000:00:1f.2-ata-1-part2",
            "/dev/disk/by-partuuid/0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "/dev/disk/by-partlabel/Linux root (x86-64)",
            "/dev/vg0/root",
            "/dev/zram0",
            "/dev/.hidden",
            "/dev//vda",
            "/dev/./vda",
            "/dev/vda/",
            "/dev/a\\b",
            "/dev/a%b",
            "/dev/a+b=c@d#e",
            "/dev/a~b",
            "/dev/tab\there",
            "/dev/ünïcødé",
            "/dev/日本語",
            "/dev/emoji-🦀",
            "/dev/x.y_z:w",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let uuids = [
            "01234567-89AB-CDEF-0123-456789ABCDEF",
            "01234567-89ab-cdef-0123-456789abcdef",
            "DEADBEEF-dead-BEEF-dead-beefDEADBEEF",
            "0123456789abcdef0123456789abcdef",
        ];
        let labels = [
            "root",
            "my root",
            "a/b",
            "with-dash",
            "UPPER lower",
            "Données",
            "ルート",
            "x\\y",
            "tab\tlabel",
            "quote\"d",
            "it's",
            "dot.label",
            "#+-.:=@_",
            "100%",
            "two  spaces",
            ".leading-dot",
            "a b c",
            "🦀 crab",
        ];
        for u in uuids {
            let cfg = config(&format!("[layout]\ndevice = \"UUID={u}\"\n"));
            v.push(device_node(&cfg.layout.device).display().to_string());
        }
        for l in labels {
            let cfg = config(&format!(
                "[layout]\ndevice = {}\n",
                toml::Value::String(format!("LABEL={l}"))
            ));
            v.push(device_node(&cfg.layout.device).display().to_string());
        }
        v
    }

    fn config(text: &str) -> Config {
        Config::parse(Path::new("/etc/tabula/tabula.toml"), text).expect("valid config")
    }

    fn systemd_escape(path: &str) -> Option<String> {
        let out = Command::new("systemd-escape")
            .args(["--path", "--suffix=device", "--", path])
            .output();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "systemd-escape is needed (Debian package systemd): {e}"
                );
                eprintln!("skipping: systemd-escape: {e}");
                return Some(String::new());
            }
        };
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    #[test]
    fn unit_names_match_systemd_escape() {
        let specs = specs();
        assert!(specs.len() >= 50, "{} specs", specs.len());
        let mut bad = Vec::new();
        for s in &specs {
            let Some(want) = systemd_escape(s) else {
                // systemd refuses it: so must we.
                if let Some(ours) = escape_path(Path::new(s)) {
                    bad.push(format!("{s:?}: systemd-escape refuses it, we give {ours}"));
                }
                continue;
            };
            if want.is_empty() {
                return; // no systemd-escape outside CI
            }
            let ours = escape_path(Path::new(s)).map(|e| format!("{e}.device"));
            if ours.as_deref() != Some(want.as_str()) {
                bad.push(format!("{s:?}: systemd-escape {want}, ours {ours:?}"));
            }
        }
        assert!(bad.is_empty(), "mismatches:\n{}", bad.join("\n"));
    }

    #[test]
    fn uuid_and_label_nodes() {
        let dev =
            |t: &str| device_node(&config(&format!("[layout]\ndevice = {t}\n")).layout.device);
        // The filesystem UUID as udev spells it: lower case, whatever the config says.
        assert_eq!(
            dev("\"UUID=01234567-89AB-CDEF-0123-456789ABCDEF\""),
            Path::new("/dev/disk/by-uuid/01234567-89ab-cdef-0123-456789abcdef")
        );
        assert_eq!(
            dev("\"LABEL=my root\""),
            Path::new("/dev/disk/by-label/my\\x20root")
        );
        assert_eq!(
            dev("\"LABEL=a/b\""),
            Path::new("/dev/disk/by-label/a\\x2fb")
        );
        assert_eq!(
            dev("\"LABEL=Données\""),
            Path::new("/dev/disk/by-label/Données")
        );
        // Single-quoted TOML strings are strings like any other.
        assert_eq!(dev("'LABEL=x\\y'"), Path::new("/dev/disk/by-label/x\\x5cy"));
        assert_eq!(
            device_unit(&config("[layout]\ndevice = 'LABEL=my root'\n").layout.device).unwrap(),
            "dev-disk-by\\x2dlabel-my\\x5cx20root.device"
        );
    }

    #[test]
    fn a_name_too_long_for_a_unit_gets_no_dependency() {
        let label = "x".repeat(250);
        let cfg = config(&format!("[layout]\ndevice = \"LABEL={label}\"\n"));
        assert_eq!(device_unit(&cfg.layout.device), None);
        let files = units(&cfg);
        assert!(!files[0].text.contains("Wants="), "{}", files[0].text);
        assert!(files[0].text.contains("tabula waits for it itself"));
    }

    #[test]
    fn argv0_dispatch() {
        assert!(is_generator_name("tabula-generator".as_ref()));
        assert!(is_generator_name(
            "/usr/lib/systemd/system-generators/tabula-generator".as_ref()
        ));
        assert!(!is_generator_name("/usr/bin/tabula".as_ref()));
        assert!(!is_generator_name("tabula-generator-old".as_ref()));
    }

    /// Golden drop-ins for a table of configs, in `tests/golden/generator/<name>.units`. Rerun with
    /// `UPDATE_GOLDEN=1` to rewrite them after an intended change, and review the diff.
    #[test]
    fn golden_units() {
        let cases: &[(&str, &str)] = &[
            ("minimal", "[layout]\ndevice = \"/dev/vda\"\n"),
            (
                "uuid-upper-case",
                "[layout]\ndevice = \"UUID=01234567-89AB-CDEF-0123-456789ABCDEF\"\ndevice_timeout = \"2min\"\n",
            ),
            (
                "label-space-single-quoted",
                "[layout]\ndevice = 'LABEL=my root'\npersist = 'keep'\n[persist]\npath = '/keep'\ndirectories = ['/var/log']\n",
            ),
            (
                "mapper-and-users",
                "[layout]\ndevice = \"/dev/mapper/vg0-root\"\n[persist]\ndirectories = [\"/var/lib/systemd\", \"/srv/www\"]\n\
                 files = [\"/etc/machine-id\"]\n[[persist.users]]\nname = \"alice\"\ndirectories = [\".ssh\"]\n\
                 [[persist.users]]\nname = \"bob\"\nhome = \"/srv/home/bob\"\nuid = 1001\ngid = 100\nfiles = [\".bashrc\"]\n",
            ),
            (
                "odd-paths",
                "[layout]\ndevice = \"LABEL=100% \\\"root\\\"\"\n[persist]\ndirectories = [\"/srv/with space\", \"/srv/100%\", \"/srv/back\\\\slash\", \"/srv/q\\\"uote\"]\n",
            ),
            (
                "label-newline",
                "[layout]\ndevice = \"LABEL=a\\nWants=evil.service\"\n[persist]\ndirectories = [\"/srv/a\\nb\"]\n",
            ),
        ];
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/generator");
        let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
        let mut failures = String::new();
        for (name, text) in cases {
            let files = units(&config(text));
            let mut got = String::new();
            for f in &files {
                let _ = write!(got, "=== {}\n{}", f.path.display(), f.text);
            }
            let path = dir.join(format!("{name}.units"));
            if update {
                std::fs::write(&path, &got).expect("writing golden");
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if want != got {
                let _ = write!(failures, "--- {name}: want\n{want}--- got\n{got}");
            }
        }
        assert!(
            failures.is_empty(),
            "golden mismatches (rerun with UPDATE_GOLDEN=1 and review the diff):\n{failures}"
        );
    }
}
