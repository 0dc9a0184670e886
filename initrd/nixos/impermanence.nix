# Moving from impermanence: accepts impermanence's `environment.persistence."/persist" = { directories;
# files; users.<name>.{home,directories,files}; }` and translates it into services.tabula.persist (flake
# output nixosModules.impermanence, which imports the tabula module: replace impermanence's module with
# it). Entries are strings or { directory | file, user, group, mode }; chmod-style modes
# ("u=rwx,g=rx,o=") become octal. Mount options impermanence needed (hideMounts, allowTrash, hideMount,
# parentDirectory, persistentStoragePath per entry) have no meaning for tabula: they are accepted and
# ignored, with a warning where the result would differ.
{ config, lib, ... }:
let
  inherit (lib) mkOption mkIf types;
  inherit (builtins) attrNames concatMap elemAt filter head isString length map match;
  cfg = config.environment.persistence;
  enabled = filter (n: cfg.${n}.enable) (attrNames cfg);

  anything = mkOption { type = types.nullOr types.anything; default = null; internal = true; description = "Accepted for compatibility; tabula ignores it."; };
  ownership = {
    user = mkOption { type = types.nullOr types.str; default = null; description = "Owner of the persistent source."; };
    group = mkOption { type = types.nullOr types.str; default = null; description = "Group of the persistent source."; };
    mode = mkOption { type = types.nullOr types.str; default = null; description = "Mode, octal or chmod-style (\"u=rwx,g=,o=\")."; };
  };
  dirType = types.either types.str (types.submodule {
    options = ownership // {
      directory = mkOption { type = types.str; description = "The directory."; };
      hideMount = anything; allowTrash = anything; persistentStoragePath = anything;
    };
  });
  fileType = types.either types.str (types.submodule {
    options = ownership // {
      file = mkOption { type = types.str; description = "The file."; };
      parentDirectory = anything; persistentStoragePath = anything;
    };
  });

  # "u=rwx,g=rx,o=" → "0750"; octal stays as it is; anything else is left for tabula's rules to reject.
  octal = m:
    let
      parts = match "u=([rwx]*),g=([rwx]*),o=([rwx]*)" m;
      digit = p: toString ((if match ".*r.*" p != null then 4 else 0) + (if match ".*w.*" p != null then 2 else 0) + (if match ".*x.*" p != null then 1 else 0));
    in
    if m == null || match "(0o)?[0-7]{3,4}" m != null || parts == null then m
    else "0" + digit (elemAt parts 0) + digit (elemAt parts 1) + digit (elemAt parts 2);

  entry = key: e:
    if isString e then e
    else if e.user == null && e.group == null && e.mode == null then e.${key}
    else {
      path = e.${key};
      inherit (e) user group;
      mode = octal e.mode;
    };

  store = if enabled == [ ] then null else cfg.${head enabled};
in
{
  imports = [ ./module.nix ];

  options.environment.persistence = mkOption {
    default = { };
    description = "impermanence's option, translated to services.tabula.persist (one persistent storage path).";
    type = types.attrsOf (types.submodule ({ name, ... }: {
      options = {
        enable = mkOption { type = types.bool; default = true; description = "Whether to use this storage path."; };
        persistentStoragePath = mkOption { type = types.str; default = name; description = "Where persistent storage is mounted."; };
        hideMounts = mkOption { type = types.bool; default = false; description = "Ignored: tabula's bind mounts are made in the initrd."; };
        allowTrash = mkOption { type = types.bool; default = false; description = "Ignored."; };
        enableDebugging = mkOption { type = types.bool; default = false; description = "Ignored."; };
        enableWarnings = mkOption { type = types.bool; default = true; description = "Ignored."; };
        directories = mkOption { type = types.listOf dirType; default = [ ]; description = "Directories to persist."; };
        files = mkOption { type = types.listOf fileType; default = [ ]; description = "Files to persist."; };
        users = mkOption {
          default = { };
          description = "Per-user entries, relative to the home.";
          type = types.attrsOf (types.submodule {
            options = {
              home = mkOption { type = types.nullOr types.str; default = null; description = "The home (default: users.users.<name>.home)."; };
              directories = mkOption { type = types.listOf dirType; default = [ ]; description = "Directories relative to the home."; };
              files = mkOption { type = types.listOf fileType; default = [ ]; description = "Files relative to the home."; };
            };
          });
        };
      };
    }));
  };

  config = mkIf (enabled != [ ]) {
    assertions = [{
      assertion = length enabled == 1;
      message = "environment.persistence: tabula has one persistent storage path, but ${toString (length enabled)} are enabled (${builtins.concatStringsSep ", " enabled}): merge them into one";
    }];
    warnings = concatMap (e:
      if !(isString e) && e.parentDirectory != null
      then [ "environment.persistence: parentDirectory of '${e.file}' is ignored: tabula gives missing parents the owner and mode of their persistent counterparts" ]
      else [ ]) store.files;
    services.tabula.persist = {
      path = store.persistentStoragePath;
      directories = map (entry "directory") store.directories;
      files = map (entry "file") store.files;
      users = builtins.mapAttrs (_: u: {
        inherit (u) home;
        directories = map (entry "directory") u.directories;
        files = map (entry "file") u.files;
      }) store.users;
    };
  };
}
