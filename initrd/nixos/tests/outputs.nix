# What tests/run compares and executes: rendered unit files per configuration, and the build command and
# TOML text of the checked config file (the module's runCommand), per configuration.
let
  cases = import ./cases.nix;
  sys = modules: impermanence: import ./system.nix { inherit modules impermanence; };
  configs = {
    full = sys cases.full false;
    scripted = sys cases.scripted false;
    overlay = sys cases.overlay false;
    impermanence = sys (cases.base ++ [ cases.impermanence ]) true;
  };
  lines = l: builtins.concatStringsSep "\n" l + "\n";
in
{
  names = lines (builtins.attrNames configs);
  unitNames = builtins.mapAttrs (_: s: lines (builtins.attrNames s.units)) configs;
  units = builtins.mapAttrs (_: s: s.units) configs;
  checkScript = builtins.mapAttrs (_: s: s.check.buildCommand) configs;
  toml = builtins.mapAttrs (_: s: s.check.env.text) configs;
}
