# The configurations the tests evaluate (tests/eval.nix, tests/run). `machine` is a complete NixOS-shaped
# system (systemd initrd, separate /home, users with fixed ids); `native` and `impermanence` say the same
# allowlist in tabula's options and in impermanence's, and must give the same tabula.toml.
let
  # minilib's mkForce is nixpkgs' ({ _type = "override"; priority = 50; content; }).
  force = (import ./minilib.nix).mkForce;
  machine = {
    boot.initrd.systemd.enable = true;
    fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "btrfs"; options = [ "subvol=root" ]; };
    fileSystems."/nix" = { device = "/dev/disk/by-label/nixos"; fsType = "btrfs"; options = [ "subvol=nix" ]; };
    fileSystems."/persist" = { device = "/dev/disk/by-label/nixos"; fsType = "btrfs"; options = [ "subvol=persist" ]; neededForBoot = true; };
    fileSystems."/home" = { device = "/dev/disk/by-label/home"; fsType = "btrfs"; neededForBoot = true; };
    fileSystems."/boot" = { device = "/dev/disk/by-label/BOOT"; fsType = "vfat"; };
    users.users.alice = { isNormalUser = true; uid = 1000; };
    users.users.bob = { isNormalUser = true; uid = 1001; group = "bob"; home = "/srv/home/bob"; };
    users.groups.bob.gid = 1001;
    users.users.git = { isSystemUser = true; uid = 977; group = "git"; home = "/var/lib/git"; };
    users.groups.git.gid = 977;
  };
  # The same allowlist, as tabula's options (native) and as impermanence's (translated).
  native = {
    services.tabula.persist = {
      directories = [
        "/var/log"
        "/var/lib/nixos"
        { path = "/var/lib/private"; mode = "0700"; }
        { path = "/srv/git"; user = "git"; group = "git"; mode = "0750"; }
      ];
      files = [ "/etc/machine-id" { path = "/etc/ssh/ssh_host_ed25519_key"; mode = "0600"; } ];
      users.alice = { directories = [ "Downloads" { path = ".gnupg"; mode = "0700"; } ]; files = [ ".netrc" ]; };
      users.bob.directories = [ ".ssh" ];
    };
  };
  impermanence = {
    environment.persistence."/persist" = {
      hideMounts = true;
      directories = [
        "/var/log"
        "/var/lib/nixos"
        { directory = "/var/lib/private"; mode = "u=rwx,g=,o="; }
        { directory = "/srv/git"; user = "git"; group = "git"; mode = "0750"; }
      ];
      files = [ "/etc/machine-id" { file = "/etc/ssh/ssh_host_ed25519_key"; mode = "0600"; } ];
      users.alice = { directories = [ "Downloads" { directory = ".gnupg"; mode = "0700"; } ]; files = [ ".netrc" ]; };
      users.bob = { home = "/srv/home/bob"; directories = [ ".ssh" ]; };
    };
  };
  tabula = {
    services.tabula = {
      enable = true;
      device = "LABEL=nixos";
      deviceTimeout = "45s";
      onFailure = "emergency";
      subvolumes = { root = "@"; blank = "@blank"; oldRoots = "@old"; persist = "@persist"; };
      retention = { keepLast = 5; keepWithin = "2d"; keepDaily = 7; keepWeekly = "all"; keepMonthly = 6; timezone = "Europe/Berlin"; minFree = "10%"; };
    };
  };
  # A second module adding to the same lists (NixOS concatenates them).
  more = {
    services.tabula.persist.directories = [ "/var/lib/bluetooth" ];
    services.tabula.persist.files = [ { path = "/etc/adjtime"; how = "symlink"; } { path = "/etc/shadow"; how = "copy"; } ];
    services.tabula.persist.users.alice.files = [ { path = ".bash_history"; how = "copy"; } ];
  };
  base = [ machine tabula ];
in
{
  inherit machine native impermanence tabula more base;
  full = base ++ [ native more ];
  scripted = base ++ [ native { boot.initrd.systemd.enable = force false; } ];
  overlay = base ++ [ native { system.etc.overlay.enable = true; } ];

  # Each bad configuration (added to `base`) must fail an assertion whose message contains `expect`.
  bad = let p = x: { services.tabula.persist = x; }; in [
    { name = "relative path"; modules = [ (p { directories = [ "var/log" ]; }) ]; expect = "persist.directories: 'var/log' is not absolute: write it from '/', such as '/var/log'"; }
    { name = "trailing slash"; modules = [ (p { directories = [ "/var/log/" ]; }) ]; expect = "'/var/log/' is not normalised: write '/var/log'"; }
    { name = "dot dot"; modules = [ (p { files = [ "/etc/../etc/hosts" ]; }) ]; expect = "'/etc/../etc/hosts' contains '..'"; }
    { name = "duplicate after merging"; modules = [ (p { directories = [ "/var/log" ]; }) (p { directories = [ "/var/log" ]; }) ]; expect = "persist.directories: '/var/log' is listed twice (also in persist.directories)"; }
    { name = "duplicate across users"; modules = [ (p { directories = [ "/home/alice/Downloads" ]; users.alice.directories = [ "Downloads" ]; }) ]; expect = "persist.users.alice.directories: '/home/alice/Downloads' is listed twice (also in persist.directories)"; }
    { name = "nested in a directory"; modules = [ (p { directories = [ "/var/lib" "/var/lib/nixos" ]; }) ]; expect = "'/var/lib/nixos' is inside the directory entry '/var/lib' (persist.directories)"; }
    { name = "below a file"; modules = [ (p { directories = [ "/etc/hosts/x" ]; files = [ "/etc/hosts" ]; }) ]; expect = "'/etc/hosts/x' is below the file entry '/etc/hosts'"; }
    { name = "forbidden prefix"; modules = [ (p { directories = [ "/run/foo" ]; }) ]; expect = "'/run/foo' is in '/run', which the kernel or init manages"; }
    { name = "root itself"; modules = [ (p { directories = [ "/" ]; }) ]; expect = "'/' cannot be persisted"; }
    { name = "inside persistent storage"; modules = [ (p { directories = [ "/persist/x" ]; }) ]; expect = "'/persist/x' is inside persistent storage '/persist' itself"; }
    { name = "containing persistent storage"; modules = [ (p { path = "/data/persist"; directories = [ "/data" ]; }) { fileSystems."/data/persist" = { device = "/dev/sdb"; neededForBoot = true; }; } ]; expect = "'/data' contains persistent storage '/data/persist'"; }
    { name = "bad mode"; modules = [ (p { directories = [ { path = "/var/lib/x"; mode = "0999"; } ]; }) ]; expect = "mode '0999' is not an octal mode"; }
    { name = "symlink directory"; modules = [ (p { directories = [ { path = "/var/lib/x"; how = "symlink"; } ]; }) ]; expect = "how = \"symlink\" is for files only"; }
    { name = "copy directory"; modules = [ (p { directories = [ { path = "/var/lib/x"; how = "copy"; } ]; }) ]; expect = "how = \"copy\" is for files only"; }
    { name = "absolute user entry"; modules = [ (p { users.alice.files = [ "/.bashrc" ]; }) ]; expect = "persist.users.alice.files: '/.bashrc' must be relative (user entries are relative to the home '/home/alice')"; }
    { name = "undeclared user"; modules = [ (p { users.carol.directories = [ "x" ]; }) ]; expect = "'carol' is not declared in users.users"; }
    { name = "user without uid"; modules = [ { users.users.dave.isNormalUser = true; } (p { users.dave.directories = [ "x" ]; }) ]; expect = "users.users.dave.uid is not set: NixOS picks it at activation, after tabula has run in the initrd, and with /var/lib/nixos not persisted it can change at every boot. Set users.users.dave.uid"; }
    { name = "user without uid, /var/lib/nixos kept"; modules = [ { users.users.dave.isNormalUser = true; } (p { directories = [ "/var/lib/nixos" ]; users.dave.directories = [ "x" ]; }) ]; expect = "users.users.dave.uid is not set: NixOS picks it at activation, after tabula has run in the initrd (the /var/lib/nixos you persist keeps it stable, but the initrd cannot read it)"; }
    { name = "group without gid"; modules = [ { users.users.erin = { isNormalUser = true; uid = 1005; group = "erin"; }; users.groups.erin = { }; } (p { users.erin.directories = [ "x" ]; }) ]; expect = "users.groups.erin.gid (the primary group of erin) is not set"; }
    { name = "entry owner without uid"; modules = [ { users.users.svc = { isSystemUser = true; group = "git"; }; } (p { directories = [ { path = "/var/lib/svc"; user = "svc"; } ]; }) ]; expect = "persist.directories: '/var/lib/svc': user 'svc' has no fixed id, so NixOS picks one at activation"; }
    { name = "entry group undeclared"; modules = [ (p { directories = [ { path = "/var/lib/svc"; group = "nosuch"; } ]; }) ]; expect = "group 'nosuch' is not declared in users.groups"; }
    { name = "home differs"; modules = [ (p { users.alice = { home = "/home/alice2"; directories = [ "x" ]; }; }) ]; expect = "services.tabula.persist.users.alice.home is '/home/alice2' but users.users.alice.home is '/home/alice'"; }
    { name = "uid out of range"; modules = [ (p { users.alice = { uid = 4294967295; directories = [ "x" ]; }; }) ]; expect = "persist.users.alice.uid: 4294967295 is not a valid id"; }
    { name = "bad user name"; modules = [ { users.users."-x" = { isNormalUser = true; uid = 1010; }; } (p { users."-x".directories = [ "x" ]; }) ]; expect = "'-x' is not a valid user name"; }
    { name = "bad device"; modules = [ { services.tabula.device = force "sda1"; } ]; expect = "services.tabula.device: write an absolute device path"; }
    { name = "bad uuid"; modules = [ { services.tabula.device = force "UUID=1234"; } ]; expect = "`UUID=` takes a filesystem UUID"; }
    { name = "device timeout without unit"; modules = [ { services.tabula.deviceTimeout = force "30"; } ]; expect = "services.tabula.deviceTimeout: '30' is not a duration"; }
    { name = "same subvolume twice"; modules = [ { services.tabula.subvolumes.blank = force "@"; } ]; expect = "services.tabula.subvolumes: root, blank name the same subvolume"; }
    { name = "subvolume with a slash"; modules = [ { services.tabula.subvolumes.oldRoots = force "a/b"; } ]; expect = "services.tabula.subvolumes.oldRoots: 'a/b' is not a single path component"; }
    { name = "keepWithin"; modules = [ { services.tabula.retention.keepWithin = force "two days"; } ]; expect = "services.tabula.retention.keepWithin: 'two days' is not a duration"; }
    { name = "minFree"; modules = [ { services.tabula.retention.minFree = force "120%"; } ]; expect = "services.tabula.retention.minFree: '120%'"; }
    { name = "timezone"; modules = [ { services.tabula.retention.timezone = force "Europe Berlin"; } ]; expect = "services.tabula.retention.timezone: 'Europe Berlin' is not an IANA time zone name"; }
    { name = "persist path relative"; modules = [ (p { path = "persist"; }) ]; expect = "services.tabula.persist.path: 'persist' is not absolute"; }
    { name = "persist path in /run"; modules = [ (p { path = "/run/persist"; }) { fileSystems."/run/persist" = { device = "/dev/sdb"; neededForBoot = true; }; } ]; expect = "services.tabula.persist.path: '/run/persist' is in '/run'"; }
    { name = "persist not needed for boot"; modules = [ { fileSystems."/persist".neededForBoot = force false; } ]; expect = "fileSystems.\"/persist\" must exist with neededForBoot = true"; }
    { name = "separate /home mounted late"; modules = [ { fileSystems."/home".neededForBoot = force false; } (p { users.alice.directories = [ "x" ]; }) ]; expect = "fileSystems.\"/home\" is mounted after the initrd, on top of what tabula binds under it (/home/alice/x): set fileSystems.\"/home\".neededForBoot = true"; }
    { name = "filesystem hidden by a bind"; modules = [ { fileSystems."/var/lib/docker" = { device = "/dev/sdc"; neededForBoot = true; }; } (p { directories = [ "/var/lib" ]; }) ]; expect = "fileSystems.\"/var/lib/docker\" (neededForBoot) is at or inside a persisted path (/var/lib)"; }
    { name = "two impermanence stores"; impermanence = true; modules = [ { environment.persistence."/persist".directories = [ "/var/log" ]; environment.persistence."/data".directories = [ "/srv" ]; } ]; expect = "tabula has one persistent storage path, but 2 are enabled"; }
  ];
}
