{
  description = "tabula: a clean btrfs root at every boot (NixOS module and package)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      # The source tree is the repository this flake lives in (initrd/nixos/ inside it).
      packages = forAll (pkgs: {
        tabula = pkgs.callPackage ./package.nix { src = ../..; };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.tabula;
      });

      nixosModules.tabula = { lib, pkgs, ... }: {
        imports = [ ./module.nix ];
        services.tabula.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.tabula;
      };
      nixosModules.default = self.nixosModules.tabula;

      checks = forAll (pkgs: {
        toml = pkgs.runCommand "tabula-toml-check" { } ''
          ${if import ./tests/eval.nix then "touch $out" else "exit 1"}
        '';
      });
    };
}
