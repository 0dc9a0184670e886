# The tabula package, built from this repository. Tests are not run here: most need root and loop
# devices (run them as root with `cargo test -- --include-ignored`, and vm-tests/run).
{ lib, rustPlatform, src }:
rustPlatform.buildRustPackage {
  pname = "tabula";
  version = (builtins.fromTOML (builtins.readFile (src + "/Cargo.toml"))).package.version;
  inherit src;
  cargoLock.lockFile = src + "/Cargo.lock";
  doCheck = false;
  meta = {
    description = "A clean slate at every boot: btrfs root rollback, persistence allowlist and old-root management";
    license = with lib.licenses; [ mit asl20 ];
    platforms = lib.platforms.linux;
    mainProgram = "tabula";
  };
}
