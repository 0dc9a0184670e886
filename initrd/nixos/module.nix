# NixOS module for tabula: a clean btrfs root at every boot. Options mirror /etc/tabula/tabula.toml.
# Wires the systemd initrd (boot.initrd.systemd.enable) or, without it, the scripted initrd; prunes old
# roots after boot at idle priority. Everything tabula would reject at boot is an assertion here (rules.nix),
# user and group names are turned into the numbers NixOS fixes at evaluation time (NixOS's initrd has no
# /etc/passwd), and the generated file is checked by `tabula check` when it is built.
{ config, lib, pkgs, utils, options, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf mkMerge mkAfter types optional optionals hasPrefix;
  inherit (builtins) attrNames concatMap concatStringsSep elem filter isInt isString length map match;
  cfg = config.services.tabula;
  rules = import ./rules.nix;
  tabula = "${cfg.package}/bin/tabula";
  systemdInitrd = config.boot.initrd.systemd.enable;
  etcOverlay = config.system.etc.overlay.enable or false;

  # --- user and group names → numbers, from users.users / users.groups -----------------------------
  accounts = config.users.users;
  groups = config.users.groups;
  # { id; problem; }: problem is null or says what to set.
  resolve = kind: v:
    let
      table = if kind == "user" then accounts else groups;
      opt = if kind == "user" then "users.users.${v}.uid" else "users.groups.${v}.gid";
      id = if kind == "user" then (table.${v}.uid or null) else (table.${v}.gid or null);
    in
    if v == null || isInt v then { id = v; problem = null; }
    else if match "[0-9]+" v != null then { id = builtins.fromJSON v; problem = null; }
    else if !(table ? ${v}) then { id = null; problem = "${kind} '${v}' is not declared in ${if kind == "user" then "users.users" else "users.groups"}: declare it with a fixed id, or write the number"; }
    else if id == null then { id = null; problem = "${kind} '${v}' has no fixed id, so NixOS picks one at activation, after tabula has run in the initrd: set ${opt}, or write the number"; }
    else { id = id; problem = null; };

  normEntry = where: e:
    let
      t = if isString e then { path = e; user = null; group = null; mode = null; how = null; } else e;
      u = resolve "user" t.user;
      g = resolve "group" t.group;
    in {
      entry = { inherit (t) path mode how; user = u.id; group = g.id; };
      problems = map (p: "services.tabula.${where}: '${t.path}': ${p}") (filter (p: p != null) [ u.problem g.problem ]);
    };
  normList = where: es: let ns = map (normEntry where) es; in {
    entries = map (n: n.entry) ns;
    problems = concatMap (n: n.problems) ns;
  };

  varLibNixosKept = builtins.any (d: rules.startsWithPath (if isString d then d else d.path) "/var/lib/nixos") cfg.persist.directories;
  mkUser = name: u:
    let
      opt = "services.tabula.persist.users.${name}";
      acct = accounts.${name} or null;
      home = if u.home != null then u.home else if acct != null then acct.home else "/home/${name}";
      uid = if u.uid != null then u.uid else if acct != null then acct.uid else null;
      group = if acct != null then acct.group else null;
      gid = if u.gid != null then u.gid else if group != null then (groups.${group}.gid or null) else null;
      dirs = normList "persist.users.${name}.directories" u.directories;
      files = normList "persist.users.${name}.files" u.files;
      why = if varLibNixosKept
        then "NixOS picks it at activation, after tabula has run in the initrd (the /var/lib/nixos you persist keeps it stable, but the initrd cannot read it)"
        else "NixOS picks it at activation, after tabula has run in the initrd, and with /var/lib/nixos not persisted it can change at every boot";
      problems =
        optional (acct == null && (u.uid == null || u.gid == null || u.home == null))
          "${opt}: '${name}' is not declared in users.users: declare the user with a fixed uid, or set home, uid and gid here"
        ++ optional (acct != null && uid == null)
          "${opt}: users.users.${name}.uid is not set: ${why}. Set users.users.${name}.uid (the uid it has now: `id -u ${name}`)"
        ++ optional (acct != null && u.gid == null && group != null && !(groups ? ${group}))
          "${opt}: the primary group '${group}' of ${name} is not declared in users.groups: declare it with a fixed gid, or set gid here"
        ++ optional (acct != null && u.gid == null && group != null && groups ? ${group} && gid == null)
          "${opt}: users.groups.${group}.gid (the primary group of ${name}) is not set: NixOS picks it at activation, after tabula has run in the initrd. Set users.groups.${group}.gid"
        ++ optional (acct != null && u.home != null && u.home != acct.home)
          "${opt}.home is '${u.home}' but users.users.${name}.home is '${acct.home}': remove ${opt}.home or make them equal"
        ++ dirs.problems ++ files.problems;
    in {
      settings = { inherit name home uid gid; directories = dirs.entries; files = files.entries; };
      inherit problems;
    };

  sysDirs = normList "persist.directories" cfg.persist.directories;
  sysFiles = normList "persist.files" cfg.persist.files;
  users = map (n: mkUser n cfg.persist.users.${n}) (attrNames cfg.persist.users);
  # Files persisted by copy (programs replace them by rename): watched on the running system and synced
  # back by `tabula persist sync`, once more at shutdown.
  copyTargets = map (e: e.path) (filter (e: e.how == "copy") sysFiles.entries)
    ++ concatMap (u: map (e: "${u.settings.home}/${e.path}") (filter (e: e.how == "copy") u.settings.files)) users;

  settings = {
    layout = {
      inherit (cfg) device deviceTimeout allowDegraded;
      inherit (cfg.subvolumes) root blank oldRoots persist;
    };
    retention = { inherit (cfg.retention) keepLast keepWithin keepDaily keepWeekly keepMonthly timezone minFree; };
    inherit (cfg) onFailure;
    persist = {
      inherit (cfg.persist) path;
      directories = sysDirs.entries;
      files = sysFiles.entries;
      users = map (u: u.settings) users;
    };
  };
  configText = import ./toml.nix settings;
  targets = map (e: e.target) (rules.entriesOf settings.persist);

  # Built with the real parser: a file `tabula check` rejects never reaches a boot. The empty root stands
  # for NixOS's initrd, which has no /etc/passwd (every id must be a number by now); the blank is empty,
  # as `tabula init` makes it, with the mount point of persistent storage.
  configFile = pkgs.runCommand "tabula.toml"
    {
      nativeBuildInputs = [ cfg.package ];
      text = configText;
      passAsFile = [ "text" ];
    } ''
    cp "$textPath" "$out"
    mkdir -p root ${lib.escapeShellArg "blank${cfg.persist.path}"}
    tabula --config "$out" check --root "$PWD/root" --blank "$PWD/blank"
  '';

  # --- filesystems around the targets ----------------------------------------------------------------
  fsList = map (n: config.fileSystems.${n}) (attrNames config.fileSystems);
  mountPointOf = fs: fs.mountPoint;
  # Filesystems on the way to a target: mounted after switch-root, they would land on top of tabula's binds.
  # (utils.fsNeededForBoot: NixOS mounts /var, /var/lib, /etc, … in the initrd whatever neededForBoot says.)
  laterAncestors = filter (fs:
    mountPointOf fs != "/" && !(utils.fsNeededForBoot fs)
    && builtins.any (t: t != mountPointOf fs && rules.startsWithPath (mountPointOf fs) t) targets) fsList;
  # Filesystems at or below a target that the initrd mounts first: tabula's bind would hide them.
  hiddenEarly = filter (fs:
    utils.fsNeededForBoot fs && builtins.any (t: rules.startsWithPath t (mountPointOf fs)) targets) fsList;

  timeout = "${cfg.deviceTimeout} 1min";
  # The device unit to wait for, when the device is given as a path or by UUID/LABEL (udev's links).
  deviceUnit =
    if hasPrefix "/dev/" cfg.device then "${utils.escapeSystemdPath cfg.device}.device"
    else if hasPrefix "UUID=" cfg.device then "${utils.escapeSystemdPath "/dev/disk/by-uuid/${lib.toLower (lib.removePrefix "UUID=" cfg.device)}"}.device"
    else if hasPrefix "LABEL=" cfg.device then "${utils.escapeSystemdPath "/dev/disk/by-label/${lib.removePrefix "LABEL=" cfg.device}"}.device"
    else null;
  persistMountUnit = "${utils.escapeSystemdPath "/sysroot${cfg.persist.path}"}.mount";
  machineId = builtins.any (e: e.path == "/etc/machine-id" && (e.how == null || e.how == "bind")) sysFiles.entries;

  entryType = types.either types.str (types.submodule {
    options = {
      path = mkOption { type = types.str; description = "Path (absolute, or relative to the home for users)."; };
      mode = mkOption { type = types.nullOr types.str; default = null; example = "0700"; description = "Mode of the persistent source (3 or 4 octal digits), enforced when set."; };
      user = mkOption { type = types.nullOr (types.either types.str types.int); default = null; description = "Owner of the persistent source: a name from users.users (with a fixed uid) or a number."; };
      group = mkOption { type = types.nullOr (types.either types.str types.int); default = null; description = "Group of the persistent source: a name from users.groups (with a fixed gid) or a number."; };
      how = mkOption { type = types.nullOr (types.enum [ "bind" "copy" "symlink" ]); default = null; description = ''"bind" (default), "copy" (files that programs replace by rename, such as /etc/shadow; synced back by tabula persist sync) or "symlink" (files only).''; };
    };
  });
  count = types.nullOr (types.either types.ints.unsigned (types.enum [ "all" ]));
in
{
  options.services.tabula = {
    enable = mkEnableOption "tabula: roll the btrfs root back to a blank snapshot at every boot, keeping an allowlist";
    package = mkOption {
      type = types.package;
      description = "The tabula package (the flake sets its own build as the default).";
    };
    device = mkOption {
      type = types.str;
      example = "/dev/mapper/cryptroot";
      description = "The btrfs device holding root, blank, persist and old_roots: a path, UUID=… or LABEL=….";
    };
    deviceTimeout = mkOption { type = types.str; default = "30s"; description = "How long tabula waits for the device (\"30s\", \"2min\"); the initrd units' TimeoutStartSec is this plus a minute."; };
    allowDegraded = mkOption { type = types.bool; default = false; description = "Mount a multi-device btrfs with a member missing (-o degraded) instead of failing; the initrd must then mount the root with rootflags=degraded too."; };
    subvolumes = {
      root = mkOption { type = types.str; default = "root"; description = "Live root subvolume."; };
      blank = mkOption { type = types.str; default = "root-blank"; description = "Read-only blank snapshot."; };
      oldRoots = mkOption { type = types.str; default = "old_roots"; description = "Subvolume that holds retired roots."; };
      persist = mkOption { type = types.str; default = "persist"; description = "Persistent subvolume."; };
    };
    persist = {
      path = mkOption { type = types.str; default = "/persist"; description = "Where the persistent subvolume is mounted (a fileSystems entry with neededForBoot)."; };
      directories = mkOption { type = types.listOf entryType; default = [ ]; example = [ "/var/log" { path = "/var/lib/private"; mode = "0700"; } ]; description = "Directories bind-mounted from persistent storage."; };
      files = mkOption { type = types.listOf entryType; default = [ ]; example = [ "/etc/machine-id" ]; description = "Files bind-mounted (or symlinked) from persistent storage."; };
      users = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            home = mkOption { type = types.nullOr types.str; default = null; description = "The home (default: users.users.<name>.home)."; };
            uid = mkOption { type = types.nullOr types.int; default = null; description = "The uid (default: users.users.<name>.uid, which must then be set)."; };
            gid = mkOption { type = types.nullOr types.int; default = null; description = "The primary gid (default: the gid of users.users.<name>.group)."; };
            directories = mkOption { type = types.listOf entryType; default = [ ]; description = "Directories relative to the user's home."; };
            files = mkOption { type = types.listOf entryType; default = [ ]; description = "Files relative to the user's home."; };
          };
        });
        default = { };
        example = { alice.directories = [ ".ssh" ]; };
        description = "Per-user allowlists, relative to each home.";
      };
    };
    retention = {
      keepLast = mkOption { type = types.ints.positive; default = 3; description = "Keep the newest N retired roots."; };
      keepWithin = mkOption { type = types.nullOr types.str; default = null; example = "2d"; description = "Keep every root retired within this span of the newest trusted one."; };
      keepDaily = mkOption { type = count; default = null; description = "Keep the first root of the last N days that had boots (or \"all\")."; };
      keepWeekly = mkOption { type = count; default = null; description = "Same, per ISO week."; };
      keepMonthly = mkOption { type = count; default = null; description = "Same, per month."; };
      timezone = mkOption { type = types.nullOr types.str; default = null; example = "Europe/Berlin"; description = "Where days, weeks and months begin (IANA name; default UTC)."; };
      minFree = mkOption { type = types.nullOr types.str; default = null; example = "10%"; description = "Free-space floor: a percentage or a size (\"20GiB\")."; };
    };
    onFailure = mkOption {
      type = types.enum [ "continue" "emergency" ];
      default = "continue";
      description = ''What a failed rollback does: "continue" boots the untouched old root and logs loudly; "emergency" stops in the initrd's emergency shell.'';
    };
    prune = {
      enable = mkOption { type = types.bool; default = true; description = "Prune retired roots after boot and daily, at idle priority."; };
    };
    configText = mkOption {
      type = types.str;
      internal = true;
      readOnly = true;
      default = configText;
      description = "The generated tabula.toml (for tests and inspection).";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions =
        [
          {
            assertion = (config.fileSystems ? ${cfg.persist.path}) && utils.fsNeededForBoot config.fileSystems.${cfg.persist.path};
            message = "services.tabula: fileSystems.\"${cfg.persist.path}\" must exist with neededForBoot = true (tabula binds persistent paths from it in the initrd).";
          }
        ]
        ++ map (m: { assertion = false; message = "services.tabula.${m}"; }) (rules.errors settings)
        ++ map (m: { assertion = false; message = m; })
          (sysDirs.problems ++ sysFiles.problems ++ concatMap (u: u.problems) users)
        ++ map (fs: {
          assertion = false;
          message = "services.tabula: fileSystems.\"${fs.mountPoint}\" is mounted after the initrd, on top of what tabula binds under it (${concatStringsSep ", " (filter (t: rules.startsWithPath fs.mountPoint t) targets)}): set fileSystems.\"${fs.mountPoint}\".neededForBoot = true, so that it is mounted first";
        }) laterAncestors
        ++ map (fs: {
          assertion = false;
          message = "services.tabula: fileSystems.\"${fs.mountPoint}\" (neededForBoot) is at or inside a persisted path (${concatStringsSep ", " (filter (t: rules.startsWithPath t fs.mountPoint) targets)}): tabula's bind mount would hide it; persist what is around it instead";
        }) hiddenEarly;
      warnings = optional (etcOverlay && !(config.system.etc.overlay.mutable or true) && builtins.any (rules.startsWithPath "/etc") targets)
        "services.tabula: /etc is a read-only overlay (system.etc.overlay.mutable = false): tabula can bind over files that exist in it but cannot create missing targets under /etc";
      environment.etc."tabula/tabula.toml".source = configFile;
      environment.systemPackages = [ cfg.package ];
      boot.initrd.supportedFilesystems = [ "btrfs" ];
    }

    (mkIf systemdInitrd {
      boot.initrd.systemd.contents."/etc/tabula/tabula.toml".source = configFile;
      boot.initrd.systemd.storePaths = [ tabula ];
      boot.initrd.systemd.services.tabula-rollback = {
        description = "tabula: roll the root back to the blank";
        wantedBy = [ "initrd.target" ];
        requiredBy = [ "sysroot.mount" ];
        # Wants, not Requires: a device that never shows up ends in tabula's own bounded wait and its
        # onFailure policy, not in a failed dependency.
        wants = optional (deviceUnit != null) deviceUnit;
        # After the device, every LUKS volume and hibernation resume; before the root is mounted.
        after = [ "local-fs-pre.target" "cryptsetup.target" "systemd-hibernate-resume.service" ] ++ optional (deviceUnit != null) deviceUnit;
        before = [ "sysroot.mount" "initrd-root-fs.target" ];
        unitConfig = {
          DefaultDependencies = false;
          OnFailure = "emergency.target";
          OnFailureJobMode = "replace-irreversibly";
        };
        serviceConfig = {
          Type = "oneshot";
          # No ExecStart= (allowed for oneshot): it only has to be active so that its ExecStop= runs.
          RemainAfterExit = true;
          ExecStart = "${tabula} rollback";
          StandardOutput = "journal+console";
          # tabula waits for the device at most deviceTimeout; the minute is for the snapshot work.
          TimeoutStartSec = timeout;
        };
      };
      boot.initrd.systemd.services.tabula-persist = {
        description = "tabula: mount the persistent paths into the new root";
        wantedBy = [ "initrd.target" ];
        # /sysroot/persist is mounted by NixOS itself (neededForBoot, asserted above).
        requires = [ "sysroot.mount" persistMountUnit ];
        # After /etc's overlay (when /etc is one), so binds under /etc land on it, not under it.
        after = [ "sysroot.mount" persistMountUnit "tabula-rollback.service" ] ++ optional etcOverlay "sysroot-etc.mount";
        before = [ "initrd-nixos-activation.service" "initrd-switch-root.target" "initrd-fs.target" ];
        unitConfig = {
          DefaultDependencies = false;
          # Every filesystem on the way to a target is mounted first (neededForBoot ones: asserted).
          RequiresMountsFor = map (t: "/sysroot${t}") targets;
        };
        serviceConfig = {
          Type = "oneshot";
          # No ExecStart= (allowed for oneshot): it only has to be active so that its ExecStop= runs.
          RemainAfterExit = true;
          ExecStart = "${tabula} persist --root /sysroot";
          StandardOutput = "journal+console";
          TimeoutStartSec = timeout;
        };
      };
    })

    # /etc/machine-id, as impermanence does it (impermanence#229, #242): the first boot has no persisted
    # id, systemd makes one and systemd-machine-id-commit writes it to the fresh root; tabula-machine-id
    # then copies it into persistent storage and binds it (`tabula persist --root / --adopt`). Later boots
    # bind it in the initrd; systemd-machine-id-commit, which fails on a bind mount ("not on a temporary
    # file system"), only runs on first boots, and never in the initrd.
    (mkIf machineId {
      boot.initrd.systemd.suppressedUnits = mkIf systemdInitrd [ "systemd-machine-id-commit.service" ];
      systemd.services.systemd-machine-id-commit.unitConfig.ConditionFirstBoot = true;
      systemd.services.tabula-machine-id = {
        description = "tabula: keep the machine id made at first boot in persistent storage";
        wantedBy = [ "sysinit.target" ];
        after = [ "systemd-machine-id-commit.service" "local-fs.target" ];
        before = [ "sysinit.target" ];
        unitConfig = {
          DefaultDependencies = false;
          ConditionPathExists = [ "!${cfg.persist.path}/etc/machine-id" "/etc/machine-id" ];
          X-Tabula-Why = "/etc/machine-id is in services.tabula.persist.files: its first value is adopted into persistent storage once";
        };
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${tabula} persist --root / --adopt";
        };
      };
    })

    (mkIf (!systemdInitrd) (mkMerge [{
      boot.initrd.extraUtilsCommands = ''
        copy_bin_and_libs ${tabula}
      '';
      # After every neededForBoot filesystem is mounted under $targetRoot.
      boot.initrd.postMountCommands = mkAfter ''
        tabula persist --root "$targetRoot" || echo "tabula persist reported failures; booting on"
      '';
    } (
      let
        # The scripted initrd has no /nix/store before the root is mounted: the config is written from
        # its text.
        rollback = mkAfter ''
          mkdir -p /etc/tabula
          # tabula knows it runs in an initrd by /etc/initrd-release (kmsg logging, on_failure).
          [ -e /etc/initrd-release ] || echo "ID=nixos-initrd" > /etc/initrd-release
          cat > /etc/tabula/tabula.toml <<'TABULA_EOF'
          ${configText}
          TABULA_EOF
          tabula rollback || fail
        '';
      in
      # postResumeCommands (NixOS >= 24.11) runs after hibernation resume; older releases only have
      # postDeviceCommands, which runs before it.
      if options.boot.initrd ? postResumeCommands
      then { boot.initrd.postResumeCommands = rollback; }
      else { boot.initrd.postDeviceCommands = rollback; }
    )]))

    # how = "copy" entries: tabula-persist-sync.path watches them (PathChanged= also sees a rename over
    # the file) and runs one sync; tabula-persist-sync-shutdown's ExecStop= syncs at shutdown, after user
    # sessions end (shells write their history on exit) and before /persist is unmounted.
    (mkIf (copyTargets != [ ]) {
      systemd.services.tabula-persist-sync = {
        description = "tabula: copy changed files back into persistent storage";
        unitConfig.RequiresMountsFor = cfg.persist.path;
        serviceConfig = { Type = "oneshot"; ExecStart = "${tabula} persist sync"; };
      };
      systemd.services.tabula-persist-sync-shutdown = {
        description = "tabula: copy changed files back into persistent storage at shutdown";
        wantedBy = [ "multi-user.target" ];
        after = [ "local-fs.target" ];
        before = [ "systemd-user-sessions.service" "shutdown.target" "umount.target" "final.target" ];
        unitConfig = {
          DefaultDependencies = false;
          RequiresMountsFor = cfg.persist.path;
          Conflicts = [ "shutdown.target" "umount.target" ];
        };
        serviceConfig = {
          Type = "oneshot";
          # No ExecStart= (allowed for oneshot): it only has to be active so that its ExecStop= runs.
          RemainAfterExit = true;
          ExecStop = "${tabula} persist sync";
          TimeoutStopSec = "2min";
        };
      };
      systemd.paths.tabula-persist-sync = {
        description = "tabula: watch files persisted by copy";
        wantedBy = [ "paths.target" ];
        wants = [ "tabula-persist-sync-shutdown.service" ];
        pathConfig = { PathChanged = copyTargets; Unit = "tabula-persist-sync.service"; };
      };
    })

    (mkIf cfg.prune.enable {
      systemd.services.tabula-prune = {
        description = "tabula: prune old roots by the retention policy";
        wantedBy = [ "multi-user.target" ];
        after = [ "multi-user.target" ];
        serviceConfig = {
          Type = "oneshot";
          ExecStart = "${tabula} roots prune";
          Nice = 19;
          IOSchedulingClass = "idle";
          CPUSchedulingPolicy = "idle";
        };
      };
      systemd.timers.tabula-prune = {
        wantedBy = [ "timers.target" ];
        timerConfig = { OnCalendar = "daily"; RandomizedDelaySec = "1h"; Persistent = true; };
      };
    })
  ]);
}
