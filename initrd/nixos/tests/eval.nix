# The evaluation tests, offline (`nix-instantiate --eval --strict initrd/nixos/tests/eval.nix` prints
# true, or throws listing every failure): complete NixOS-shaped configurations evaluate with no failed
# assertion; every rule of rules.nix and the module's own checks fire on a bad configuration with their
# message; impermanence's shape gives the same tabula.toml as tabula's own options; the TOML text is
# exactly the expected one.
let
  inherit (builtins) all any concatMap concatStringsSep filter length map toJSON;
  cases = import ./cases.nix;
  sys = modules: import ./system.nix { inherit modules; };
  hasInfix = needle: s: builtins.match ".*${escapeRegex needle}.*" s != null;
  escapeRegex = builtins.replaceStrings
    [ "\\" "." "*" "+" "?" "(" ")" "[" "]" "{" "}" "|" "^" "$" ] [ "\\\\" "\\." "\\*" "\\+" "\\?" "\\(" "\\)" "\\[" "\\]" "\\{" "\\}" "\\|" "\\^" "\\$" ];

  # A good configuration: no failed assertion, and its TOML and units evaluate.
  good = name: modules:
    let s = sys modules; in
    if s.failed == [ ] && builtins.deepSeq [ s.toml s.units ] true then [ ] else [ "${name}: assertions failed: ${toJSON s.failed}" ];
  bad = c:
    let
      s = import ./system.nix { modules = cases.base ++ c.modules; impermanence = c.impermanence or false; };
      hit = any (m: hasInfix c.expect m) s.failed;
    in
    if hit then [ ] else [ "bad configuration '${c.name}': no assertion says \"${c.expect}\"; got ${toJSON s.failed}" ];

  native = sys (cases.base ++ [ cases.native ]);
  imperm = import ./system.nix { modules = cases.base ++ [ cases.impermanence ]; impermanence = true; };
  want = ''
    [layout]
    device = "LABEL=nixos"
    device_timeout = "45s"
    root = "@"
    blank = "@blank"
    old_roots = "@old"
    persist = "@persist"

    [persist]
    path = "/persist"
    directories = ["/var/log", "/var/lib/nixos", { path = "/var/lib/private", mode = "0700" }, { path = "/srv/git", user = 977, group = 977, mode = "0750" }]
    files = ["/etc/machine-id", { path = "/etc/ssh/ssh_host_ed25519_key", mode = "0600" }]

    [retention]
    keep_last = 5
    keep_within = "2d"
    keep_daily = 7
    keep_weekly = "all"
    keep_monthly = 6
    timezone = "Europe/Berlin"
    min_free = "10%"

    [boot]
    on_failure = "emergency"

    [[persist.users]]
    name = "alice"
    home = "/home/alice"
    uid = 1000
    gid = 100
    directories = ["Downloads", { path = ".gnupg", mode = "0700" }]
    files = [".netrc"]

    [[persist.users]]
    name = "bob"
    home = "/srv/home/bob"
    uid = 1001
    gid = 1001
    directories = [".ssh"]
    files = []
  '';
  failures =
    good "full" cases.full
    ++ good "scripted initrd" cases.scripted
    ++ good "etc overlay" cases.overlay
    ++ (if imperm.failed == [ ] then [ ] else [ "impermanence: assertions failed: ${toJSON imperm.failed}" ])
    ++ (if native.toml == want then [ ] else [ "native TOML:\n${native.toml}\nexpected:\n${want}" ])
    ++ (if imperm.toml == native.toml then [ ] else [ "impermanence TOML differs from the native one:\n${imperm.toml}" ])
    ++ concatMap bad cases.bad
    # Each bad case must fail on its own rule: none of them is accepted by a good configuration.
    ++ (if length cases.bad >= 30 then [ ] else [ "fewer bad cases than expected" ]);
in
if failures == [ ] then true else throw ("tabula NixOS module tests failed:\n- " + concatStringsSep "\n- " failures)
