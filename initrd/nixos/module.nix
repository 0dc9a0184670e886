# NixOS module for tabula: a clean btrfs root at every boot. Options mirror /etc/tabula/tabula.toml.
# Wires the systemd initrd (boot.initrd.systemd.enable) or, without it, the scripted initrd; asserts that
# the persistent filesystem is neededForBoot; prunes old roots after boot at idle priority.
{ config, lib, pkgs, utils, options, ... }:
let
  inherit (lib) mkOption mkEnableOption mkIf mkMerge mkAfter types optional hasPrefix;
  cfg = config.services.tabula;
  configText = import ./toml.nix cfg;
  configFile = pkgs.writeText "tabula.toml" configText;
  tabula = "${cfg.package}/bin/tabula";
  systemdInitrd = config.boot.initrd.systemd.enable;
  # The device unit to wait for: only for a device path (UUID=/LABEL= are resolved by tabula, and the
  # matching /dev/disk/by-* unit is used when given that way).
  deviceUnit =
    if hasPrefix "/dev/" cfg.device then "${utils.escapeSystemdPath cfg.device}.device"
    else if hasPrefix "UUID=" cfg.device then "${utils.escapeSystemdPath "/dev/disk/by-uuid/${lib.removePrefix "UUID=" cfg.device}"}.device"
    else if hasPrefix "LABEL=" cfg.device then "${utils.escapeSystemdPath "/dev/disk/by-label/${lib.removePrefix "LABEL=" cfg.device}"}.device"
    else null;
  persistMountUnit = "${utils.escapeSystemdPath "/sysroot${cfg.persist.path}"}.mount";

  entryType = types.either types.str (types.submodule {
    options = {
      path = mkOption { type = types.str; description = "Path (absolute, or relative to the home for users)."; };
      mode = mkOption { type = types.nullOr types.str; default = null; example = "0700"; description = "Mode of the persistent source when tabula creates it."; };
      user = mkOption { type = types.nullOr types.str; default = null; description = "Owner of the persistent source when tabula creates it."; };
      group = mkOption { type = types.nullOr types.str; default = null; description = "Group of the persistent source when tabula creates it."; };
    };
  });
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
    deviceTimeout = mkOption { type = types.str; default = "30s"; description = "How long tabula waits for the device."; };
    allowDegraded = mkOption { type = types.bool; default = false; description = "Mount a multi-device btrfs with a member missing (-o degraded) instead of failing; the initrd must then mount the root with rootflags=degraded too."; };
    subvolumes = {
      root = mkOption { type = types.str; default = "root"; description = "Live root subvolume."; };
      blank = mkOption { type = types.str; default = "root-blank"; description = "Read-only blank snapshot."; };
      oldRoots = mkOption { type = types.str; default = "old_roots"; description = "Subvolume that holds retired roots."; };
      persist = mkOption { type = types.str; default = "persist"; description = "Persistent subvolume."; };
    };
    persist = {
      path = mkOption { type = types.str; default = "/persist"; description = "Where the persistent subvolume is mounted."; };
      directories = mkOption { type = types.listOf entryType; default = [ ]; example = [ "/var/log" { path = "/var/lib/private"; mode = "0700"; } ]; description = "Directories bind-mounted from persistent storage."; };
      files = mkOption { type = types.listOf entryType; default = [ ]; example = [ "/etc/machine-id" ]; description = "Files bind-mounted from persistent storage."; };
      users = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
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
      keepDaily = mkOption { type = types.nullOr types.ints.unsigned; default = null; description = "Keep the first root of the last N days that had boots."; };
      keepWeekly = mkOption { type = types.nullOr types.ints.unsigned; default = null; description = "Same, per week."; };
      keepMonthly = mkOption { type = types.nullOr types.ints.unsigned; default = null; description = "Same, per month."; };
    };
    onFailure = mkOption {
      type = types.enum [ "continue" "emergency" ];
      default = "continue";
      description = ''What a failed rollback does: "continue" boots the untouched old root and logs loudly; "emergency" stops in the initrd's emergency shell.'';
    };
    prune = {
      enable = mkOption { type = types.bool; default = true; description = "Prune retired roots after boot and daily, at idle priority."; };
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = (config.fileSystems ? ${cfg.persist.path}) && config.fileSystems.${cfg.persist.path}.neededForBoot;
          message = "services.tabula: fileSystems.\"${cfg.persist.path}\" must exist with neededForBoot = true (tabula binds persistent paths from it in the initrd).";
        }
      ];
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
        requires = optional (deviceUnit != null) deviceUnit;
        # After the device, every LUKS volume and hibernation resume; before the root is mounted.
        after = [ "local-fs-pre.target" "cryptsetup.target" ] ++ optional (deviceUnit != null) deviceUnit;
        before = [ "sysroot.mount" "initrd-root-fs.target" ];
        unitConfig = {
          DefaultDependencies = false;
          OnFailure = "emergency.target";
          OnFailureJobMode = "replace-irreversibly";
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${tabula} rollback";
          StandardOutput = "journal+console";
        };
      };
      boot.initrd.systemd.services.tabula-persist = {
        description = "tabula: mount the persistent paths into the new root";
        wantedBy = [ "initrd.target" ];
        # /sysroot/persist is mounted by NixOS itself (neededForBoot, asserted above).
        requires = [ "sysroot.mount" persistMountUnit ];
        after = [ "sysroot.mount" persistMountUnit "tabula-rollback.service" ];
        before = [ "initrd-nixos-activation.service" "initrd-switch-root.target" "initrd-fs.target" ];
        unitConfig.DefaultDependencies = false;
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${tabula} persist --root /sysroot";
          StandardOutput = "journal+console";
        };
      };
    })

    (mkIf (!systemdInitrd) (mkMerge [{
      boot.initrd.extraUtilsCommands = ''
        copy_bin_and_libs ${tabula}
      '';
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
