{
  description = "tabula: a clean btrfs root at every boot (NixOS module and package)";

  # The current stable NixOS; flake.lock pins a commit of its channel. Its rustc (1.95) is at least
  # Cargo.toml's rust-version.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      withPackage = { lib, pkgs, ... }: {
        services.tabula.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.tabula;
      };
    in
    {
      # The source tree is the repository this flake lives in (initrd/nixos/ inside it).
      packages = forAll (pkgs: {
        tabula = pkgs.callPackage ./package.nix { src = ../..; };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.tabula;
      });

      nixosModules.tabula = { imports = [ ./module.nix withPackage ]; };
      nixosModules.default = self.nixosModules.tabula;
      # Moving from impermanence: use this instead of impermanence's module; environment.persistence
      # is translated to services.tabula.persist (impermanence.nix).
      nixosModules.impermanence = { imports = [ ./impermanence.nix withPackage ]; };

      checks = forAll (pkgs: {
        # The offline tests (the same as initrd/check runs).
        module-eval = pkgs.runCommand "tabula-module-eval" { } ''
          ${if import ./tests/eval.nix then "touch $out" else "exit 1"}
        '';
        # The test machine evaluated with this nixpkgs: its tabula.toml is built, which runs
        # `tabula check` on it.
        config-file = (nixpkgs.lib.nixosSystem {
          inherit (pkgs.stdenv.hostPlatform) system;
          modules = [ self.nixosModules.tabula { boot.loader.grub.enable = false; system.stateVersion = "26.05"; } ]
            ++ (import ./tests/cases.nix).full;
        }).config.environment.etc."tabula/tabula.toml".source;
      });
    };
}
