use super::*;
use std::path::Path;
use std::time::Duration;
fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("/etc/tabula/tabula.toml"), text)
}

#[test]
fn defaults() {
    let c = parse("[layout]\ndevice = \"/dev/vda2\"\n").unwrap();
    assert_eq!(c.layout.device, DeviceSpec::Path("/dev/vda2".into()));
    assert_eq!(c.layout.device_timeout, Duration::from_secs(30));
    assert_eq!(
        (
            &*c.layout.root,
            &*c.layout.blank,
            &*c.layout.old_roots,
            &*c.layout.persist
        ),
        ("root", "root-blank", "old_roots", "persist")
    );
}

#[test]
fn uuid_and_label() {
    let c = parse("[layout]\ndevice = \"UUID=0123ABCD-89ab-cdef-0123-456789abcdef\"\n").unwrap();
    assert_eq!(
        c.layout.device,
        DeviceSpec::Uuid("0123abcd-89ab-cdef-0123-456789abcdef".into())
    );
    let c = parse("[layout]\ndevice = \"LABEL=nixos\"\ndevice_timeout = \"2min\"\n").unwrap();
    assert_eq!(c.layout.device, DeviceSpec::Label("nixos".into()));
    assert_eq!(c.layout.device_timeout, Duration::from_secs(120));
}

#[test]
fn blank_history() {
    assert_eq!(
        parse("[layout]\ndevice = \"/dev/x\"\n")
            .unwrap()
            .layout
            .blank_history,
        2
    );
    let c = parse("[layout]\ndevice = \"/dev/x\"\nblank_history = 5\n").unwrap();
    assert_eq!(c.layout.blank_history, 5);
    let e = parse("[layout]\ndevice = \"/dev/x\"\nblank_history = 0\n").unwrap_err();
    assert!(e.message.contains("blank_history"), "{e}");
    assert_eq!(e.line, Some(3), "{e}");
}

#[test]
fn unknown_key_has_line_and_column() {
    let e = parse("[layout]\ndevice = \"/dev/vda2\"\n  colour = \"red\"\n").unwrap_err();
    assert_eq!((e.line, e.column), (Some(3), Some(3)), "{e}");
    assert!(e.message.contains("colour"), "{e}");
}

#[test]
fn retention_and_boot() {
    let c = parse(
        "[layout]\ndevice = \"/dev/x\"\n[retention]\nkeep_last = 3\nkeep_within = \"2w\"\nkeep_daily = 7\n\
         keep_weekly = \"all\"\ntimezone = \"Europe/Berlin\"\nmin_free = \"10%\"\n[boot]\non_failure = \"emergency\"\n",
    )
    .unwrap();
    assert_eq!(c.retention.keep_last, 3);
    assert_eq!(
        c.retention.keep_within,
        Some(Duration::from_secs(14 * 86400))
    );
    assert_eq!(
        (
            c.retention.keep_daily,
            c.retention.keep_weekly,
            c.retention.keep_monthly
        ),
        (Some(7), Some(usize::MAX), None)
    );
    assert_eq!(c.retention.timezone.name(), "Europe/Berlin");
    assert_eq!(c.retention.min_free, Some(MinFree::Percent(10.0)));
    assert_eq!(c.boot.on_failure, OnFailure::Emergency);
    let d = parse("[layout]\ndevice = \"/dev/x\"\n").unwrap();
    assert_eq!(d.retention, Policy::default());
    assert_eq!(d.boot.on_failure, OnFailure::Continue);
    for (bad, line) in [
        ("keep_last = 0", 4),
        ("keep_daily = -1", 4),
        ("keep_weekly = \"lots\"", 4),
        ("timezone = \"Mars/Olympus\"", 4),
        ("min_free = \"lots\"", 4),
        ("keep_within = \"1 fortnight\"", 4),
        ("keep_hourly = 3", 4),
    ] {
        let e = parse(&format!(
            "[layout]\ndevice = \"/dev/x\"\n[retention]\n{bad}\n"
        ))
        .unwrap_err();
        assert_eq!(e.line, Some(line), "{bad}: {e}");
    }
    assert_eq!(parse_min_free("20GiB"), Some(MinFree::Bytes(20 << 30)));
    assert_eq!(parse_min_free("500M"), Some(MinFree::Bytes(500 << 20)));
    assert_eq!(parse_min_free("100%"), None);
    assert_eq!(parse_min_free("x"), None);
}

#[test]
fn bad_values_are_located() {
    let e = parse("[layout]\ndevice = \"vda2\"\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    let e = parse("[layout]\ndevice = \"/dev/x\"\ndevice_timeout = \"soon\"\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    let e = parse("[layout]\ndevice = \"/dev/x\"\nroot = \"a/b\"\n").unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    let e = parse("[layout]\ndevice = \"/dev/x\"\nblank = \"root\"\n").unwrap_err();
    assert!(e.message.contains("same subvolume"), "{e}");
    let e = parse("[layout]\n").unwrap_err();
    assert!(e.message.contains("device"), "{e}");
    let e = parse("").unwrap_err();
    assert!(e.message.contains("[layout]"), "{e}");
}

#[test]
fn persist_defaults_and_entries() {
    let c = parse("[layout]\ndevice = \"/dev/vda2\"\n").unwrap();
    assert_eq!(c.persist, Persist::default());
    assert_eq!(c.persist.path, Path::new("/persist"));

    let c = parse(
        "[layout]\ndevice = \"/dev/vda2\"\n[persist]\npath = \"/state\"\n\
         directories = [\"/var/log\", { path = \"/srv\", user = \"1000\", group = \"users\", mode = \"750\" }]\n\
         files = [{ path = \"/etc/hostid\", how = \"symlink\" }, \"/etc/machine-id\"]\n\
         [[persist.users]]\nname = \"alice\"\ndirectories = [\"Downloads\"]\nfiles = [\".bash_history\"]\n\
         [[persist.users]]\nname = \"bob\"\nhome = \"/srv/home/bob\"\nuid = 1001\ngid = 100\n",
    )
    .unwrap();
    let p = &c.persist;
    assert_eq!(p.path, Path::new("/state"));
    assert_eq!(p.path_loc, Some(Loc { line: 4, column: 8 }));
    let srv = &p.directories[1];
    assert_eq!(srv.user, Some(IdSpec::Id(1000)));
    assert_eq!(srv.group, Some(IdSpec::Name("users".into())));
    assert_eq!(srv.mode, Some(0o750));
    assert_eq!(
        srv.loc,
        Loc {
            line: 5,
            column: 28
        }
    );
    assert_eq!(p.files[0].how, How::Symlink);
    assert_eq!(p.users[0].home, Path::new("/home/alice"));
    assert_eq!((p.users[1].uid, p.users[1].gid), (Some(1001), Some(100)));
    let targets: Vec<PathBuf> = p.entries().iter().map(EntryRef::target).collect();
    let want = [
        "/etc/hostid",
        "/etc/machine-id",
        "/home/alice/.bash_history",
        "/home/alice/Downloads",
        "/srv",
        "/var/log",
    ];
    assert_eq!(targets, want.iter().map(PathBuf::from).collect::<Vec<_>>());
    assert_eq!(
        p.source_of(Path::new("/var/log")),
        Path::new("/state/var/log")
    );
}

#[test]
fn persist_errors_are_all_reported_in_order() {
    let text = "[layout]\ndevice = \"/dev/vda2\"\n[persist]\n\
                directories = [\"/a\", \"/a\", \"b\", { path = \"/c\", mode = \"8\" }]\n";
    let errors = Config::parse_all(Path::new("f.toml"), text).unwrap_err();
    let got: Vec<(Option<usize>, Option<usize>)> =
        errors.iter().map(|e| (e.line, e.column)).collect();
    assert_eq!(
        got,
        [
            (Some(4), Some(22)),
            (Some(4), Some(28)),
            (Some(4), Some(55))
        ],
        "{errors:#?}"
    );
    let first = parse(text).unwrap_err();
    assert_eq!((first.line, first.column), (Some(4), Some(22)));
    assert!(first.message.contains("listed twice"), "{first}");
}

#[test]
fn path_and_mode_helpers() {
    assert_eq!(
        normalised_absolute("/var/log"),
        Ok(PathBuf::from("/var/log"))
    );
    assert!(
        normalised_absolute("/var/log/")
            .unwrap_err()
            .contains("write '/var/log'")
    );
    assert!(normalised_absolute("/a/./b").is_err());
    assert!(normalised_absolute("/a/../b").unwrap_err().contains("'..'"));
    assert!(
        normalised_relative("a//b")
            .unwrap_err()
            .contains("write 'a/b'")
    );
    assert_eq!(parse_mode("0755"), Ok(0o755));
    assert_eq!(parse_mode("2770"), Ok(0o2770));
    assert_eq!(parse_mode("700"), Ok(0o700));
    assert!(
        parse_mode("0o7").is_err() && parse_mode("08").is_err() && parse_mode("07777x").is_err()
    );
}

#[test]
fn line_index_gives_the_scan_positions() {
    let text = "a = 1\n\n# é ü\n  [x]\r\nkey = \"värde\"\nlast";
    let src = Source::new(Path::new("/t.toml"), text);
    for (offset, _) in text.char_indices().chain([(text.len(), ' ')]) {
        assert_eq!(
            src.position(offset),
            line_column(text, offset),
            "offset {offset}"
        );
    }
    assert_eq!(
        src.position(text.len() + 10),
        line_column(text, text.len() + 10)
    );
    let empty = Source::new(Path::new("/t.toml"), "");
    assert_eq!(empty.position(0), (1, 1));
}
