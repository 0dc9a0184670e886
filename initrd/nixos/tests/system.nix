# Evaluates a NixOS-shaped configuration: the option fixture, the tabula module (and, when asked, its
# impermanence translation) and `modules`. By default with the fixture's lib; pass `nixpkgs` (a path to a
# nixpkgs tree) to evaluate the same configuration against real NixOS (done by hand, see the README).
{ modules, impermanence ? false, nixpkgs ? null }:
let
  lib = import ./minilib.nix;
  stubs = import ./stubs.nix lib;
  # impermanence.nix imports module.nix.
  tabulaModules = [
    (if impermanence then ../impermanence.nix else ../module.nix)
    { services.tabula.package = stubs.pkgs.tabula; }
  ];
  evaluated =
    if nixpkgs == null then
      (lib.evalModules {
        modules = [ ./nixos-options.nix ] ++ tabulaModules ++ modules;
        specialArgs = { inherit (stubs) pkgs utils; };
      }).config
    else
      (import "${nixpkgs}/nixos/lib/eval-config.nix" {
        system = "x86_64-linux";
        modules = tabulaModules ++ modules ++ [ { system.stateVersion = "24.05"; } ];
      }).config;
  c = evaluated;
  render = import ./units.nix;
  initrd = c.boot.initrd.systemd.services;
  stage2 = c.systemd.services;
  pick = set: name: if set ? ${name} then { ${name} = set.${name}; } else { };
in
{
  config = c;
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  inherit (c) warnings;
  toml = c.services.tabula.configText;
  check = c.environment.etc."tabula/tabula.toml".source;
  units = builtins.mapAttrs (_: render) (
    (if initrd ? tabula-rollback then { "initrd-tabula-rollback.service" = initrd.tabula-rollback; "initrd-tabula-persist.service" = initrd.tabula-persist; } else { })
    // (if stage2 ? tabula-prune then { "tabula-prune.service" = stage2.tabula-prune; "tabula-prune.timer" = c.systemd.timers.tabula-prune; } else { })
    // (if stage2 ? tabula-persist-sync then {
      "tabula-persist-sync.service" = stage2.tabula-persist-sync;
      "tabula-persist-sync-shutdown.service" = stage2.tabula-persist-sync-shutdown;
      "tabula-persist-sync.path" = c.systemd.paths.tabula-persist-sync;
    } else { })
    // (if stage2 ? tabula-machine-id then { "tabula-machine-id.service" = stage2.tabula-machine-id; } else { })
    // (if stage2 ? systemd-machine-id-commit then { "systemd-machine-id-commit.service.d-tabula.conf" = stage2.systemd-machine-id-commit // { description = ""; }; } else { })
  ) // (if c.boot.initrd.systemd.enable then { } else {
    # The scripted initrd: the commands the module adds to stage 1.
    "stage-1-commands.sh" = "# postResumeCommands\n${c.boot.initrd.postResumeCommands}\n# postMountCommands\n${c.boot.initrd.postMountCommands}";
  });
}
