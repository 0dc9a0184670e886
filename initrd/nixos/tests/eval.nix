# Offline check of the TOML generation: `nix-instantiate --eval --strict initrd/nixos/tests/eval.nix`
# prints true, or throws with the text it got.
let
  cfg = {
    device = "/dev/disk/by-label/nixos";
    deviceTimeout = "30s";
    subvolumes = { root = "root"; blank = "root-blank"; oldRoots = "old_roots"; persist = "persist"; };
    persist = {
      path = "/persist";
      directories = [ "/var/log" { path = "/var/lib/private"; mode = "0700"; user = null; } ];
      files = [ "/etc/machine-id" ];
      users.alice = { directories = [ ".ssh" ]; files = [ ]; };
    };
    retention = { keepLast = 3; keepWithin = null; keepDaily = 7; keepWeekly = null; keepMonthly = null; };
    onFailure = "continue";
  };
  got = import ../toml.nix cfg;
  want = ''
    [layout]
    device = "/dev/disk/by-label/nixos"
    device_timeout = "30s"
    root = "root"
    blank = "root-blank"
    old_roots = "old_roots"
    persist = "persist"

    [persist]
    path = "/persist"
    directories = ["/var/log", { mode = "0700", path = "/var/lib/private" }]
    files = ["/etc/machine-id"]

    [retention]
    keep_last = 3
    keep_daily = 7

    [boot]
    on_failure = "continue"

    [[persist.users]]
    name = "alice"
    directories = [".ssh"]
    files = []
  '';
in
if got == want then true else throw "tabula toml.nix produced:\n${got}\nexpected:\n${want}"
