# Turns the services.tabula options into the text of /etc/tabula/tabula.toml. Pure builtins (no nixpkgs
# lib), so that it evaluates offline: tests/eval.nix checks it with `nix-instantiate --eval`.
cfg:
let
  inherit (builtins) concatStringsSep map isString isList isAttrs isInt isBool toJSON attrNames filter length;
  # TOML basic strings are JSON strings for everything we emit.
  str = s: toJSON s;
  value = v:
    if isString v then str v
    else if isBool v then (if v then "true" else "false")
    else if isInt v then toString v
    else if isList v then "[" + concatStringsSep ", " (map value v) + "]"
    else if isAttrs v then
      "{ " + concatStringsSep ", " (map (k: "${k} = ${value v.${k}}") (filter (k: v.${k} != null) (attrNames v))) + " }"
    else throw "tabula: cannot write ${toJSON v} as TOML";
  # An allowlist entry: a plain path, or a table with only the keys that are set.
  entry = e: if isString e then e else e;
  kv = k: v: if v == null then null else "${k} = ${value v}";
  lines = ls: concatStringsSep "\n" (filter (l: l != null) ls);
  section = name: ls: let body = lines ls; in if body == "" then "" else "[${name}]\n${body}\n";
  p = cfg.persist;
  r = cfg.retention;
  user = name: u: ''

    [[persist.users]]
    ${lines [ (kv "name" name) (kv "directories" (map entry u.directories)) (kv "files" (map entry u.files)) ]}
  '';
in
concatStringsSep "\n" (filter (s: s != "") [
  (section "layout" [
    (kv "device" cfg.device)
    (kv "device_timeout" cfg.deviceTimeout)
    (kv "root" cfg.subvolumes.root)
    (kv "blank" cfg.subvolumes.blank)
    (kv "old_roots" cfg.subvolumes.oldRoots)
    (kv "persist" cfg.subvolumes.persist)
    (kv "allow_degraded" (if cfg.allowDegraded or false then true else null))
  ])
  (section "persist" [
    (kv "path" p.path)
    (kv "directories" (map entry p.directories))
    (kv "files" (map entry p.files))
  ])
  (section "retention" [
    (kv "keep_last" r.keepLast)
    (kv "keep_within" r.keepWithin)
    (kv "keep_daily" r.keepDaily)
    (kv "keep_weekly" r.keepWeekly)
    (kv "keep_monthly" r.keepMonthly)
  ])
  (section "boot" [ (kv "on_failure" cfg.onFailure) ])
])
+ concatStringsSep "" (map (n: user n p.users.${n}) (attrNames p.users))
