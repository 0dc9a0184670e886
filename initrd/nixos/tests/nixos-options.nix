# Minimal declarations of the NixOS options the tabula module reads or sets, with nixpkgs' defaults and
# semantics where the module depends on them (users.users.<n>.home/group for normal users, fileSystems'
# mountPoint, root's fixed ids). A definition of any other option fails the evaluation (minilib), so the
# module cannot silently set something this fixture does not know.
{ lib, ... }:
let
  inherit (lib) mkOption mkDefault mkIf types;
  strs = mkOption { type = types.listOf types.str; default = [ ]; };
  unit = types.submodule {
    options = {
      enable = mkOption { type = types.bool; default = true; };
      description = mkOption { type = types.str; default = ""; };
      wantedBy = strs; requiredBy = strs; wants = strs; requires = strs; after = strs; before = strs;
      unitConfig = mkOption { type = types.attrsOf types.anything; default = { }; };
      serviceConfig = mkOption { type = types.attrsOf types.anything; default = { }; };
      timerConfig = mkOption { type = types.attrsOf types.anything; default = { }; };
      pathConfig = mkOption { type = types.attrsOf types.anything; default = { }; };
      script = mkOption { type = types.lines; default = ""; };
    };
  };
  units = mkOption { type = types.attrsOf unit; default = { }; };
  lines = mkOption { type = types.lines; default = ""; };
in
{
  options = {
    assertions = mkOption { type = types.listOf types.anything; default = [ ]; };
    warnings = strs;
    users.users = mkOption {
      default = { };
      type = types.attrsOf (types.submodule ({ name, config, ... }: {
        options = {
          uid = mkOption { type = types.nullOr types.int; default = null; };
          group = mkOption { type = types.str; default = ""; };
          home = mkOption { type = types.str; default = "/var/empty"; };
          isNormalUser = mkOption { type = types.bool; default = false; };
          isSystemUser = mkOption { type = types.bool; default = false; };
        };
        # nixpkgs' users-groups.nix
        config = mkIf config.isNormalUser {
          group = mkDefault "users";
          home = mkDefault "/home/${name}";
        };
      }));
    };
    users.groups = mkOption {
      default = { };
      type = types.attrsOf (types.submodule {
        options.gid = mkOption { type = types.nullOr types.int; default = null; };
      });
    };
    fileSystems = mkOption {
      default = { };
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options = {
          mountPoint = mkOption { type = types.str; default = name; };
          device = mkOption { type = types.nullOr types.str; default = null; };
          fsType = mkOption { type = types.str; default = "auto"; };
          options = strs;
          neededForBoot = mkOption { type = types.bool; default = false; };
        };
      }));
    };
    boot.initrd = {
      systemd = {
        enable = mkOption { type = types.bool; default = false; };
        services = units;
        contents = mkOption { type = types.attrsOf (types.submodule { options.source = mkOption { type = types.anything; }; }); default = { }; };
        storePaths = mkOption { type = types.listOf types.anything; default = [ ]; };
        suppressedUnits = strs;
      };
      supportedFilesystems = strs;
      extraUtilsCommands = lines;
      postDeviceCommands = lines;
      postResumeCommands = lines;
      postMountCommands = lines;
    };
    environment.etc = mkOption { type = types.attrsOf (types.submodule { options.source = mkOption { type = types.anything; }; }); default = { }; };
    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    system.etc.overlay = {
      enable = mkOption { type = types.bool; default = false; };
      mutable = mkOption { type = types.bool; default = true; };
    };
    systemd = {
      services = units;
      timers = units;
      paths = units;
      suppressedSystemUnits = strs;
    };
  };

  # nixpkgs' users-groups.nix and ids.nix: root and the users group have fixed ids.
  config = {
    users.users.root = { uid = 0; group = "root"; home = "/root"; };
    users.groups.root.gid = 0;
    users.groups.users.gid = 100;
  };
}
