# Turns the resolved settings (module.nix builds them from services.tabula: user and group names already
# turned into numbers from users.users / users.groups) into the text of /etc/tabula/tabula.toml. Pure
# builtins (no nixpkgs lib), so that it evaluates offline.
#
# settings = {
#   layout = { device; deviceTimeout; allowDegraded; root; blank; oldRoots; persist; };
#   retention = { keepLast; keepWithin; keepDaily; keepWeekly; keepMonthly; timezone; minFree; };
#   onFailure;
#   persist = { path; directories; files; users = [ { name; home; uid; gid; directories; files; } ]; };
# }
# An entry is { path; user; group; mode; how; } with null for what is not set.
s:
let
  inherit (builtins) concatStringsSep map isString isBool isInt isList toJSON filter all;
  # TOML basic strings are JSON strings for everything we emit.
  value = v:
    if isString v then toJSON v
    else if isBool v then (if v then "true" else "false")
    else if isInt v then toString v
    else if isList v then "[" + concatStringsSep ", " (map value v) + "]"
    else throw "tabula: cannot write ${toJSON v} as TOML";
  # A plain path string when only the path is set, else an inline table in a fixed key order.
  entry = e:
    let set = filter (k: e.${k} != null) [ "path" "user" "group" "mode" "how" ]; in
    if set == [ "path" ] then value e.path
    else "{ " + concatStringsSep ", " (map (k: "${k} = ${value e.${k}}") set) + " }";
  list = es: "[" + concatStringsSep ", " (map entry es) + "]";
  kv = k: v: if v == null then null else "${k} = ${value v}";
  kvRaw = k: v: "${k} = ${v}";
  lines = ls: concatStringsSep "\n" (filter (l: l != null) ls);
  section = name: ls: let body = lines ls; in if body == "" then "" else "[${name}]\n${body}\n";
  l = s.layout;
  r = s.retention;
  p = s.persist;
  user = u: ''

    [[persist.users]]
    ${lines [ (kv "name" u.name) (kv "home" u.home) (kv "uid" u.uid) (kv "gid" u.gid)
              (kvRaw "directories" (list u.directories)) (kvRaw "files" (list u.files)) ]}
  '';
in
concatStringsSep "\n" (filter (x: x != "") [
  (section "layout" [
    (kv "device" l.device)
    (kv "device_timeout" l.deviceTimeout)
    (kv "root" l.root)
    (kv "blank" l.blank)
    (kv "old_roots" l.oldRoots)
    (kv "persist" l.persist)
    (kv "allow_degraded" (if l.allowDegraded or false then true else null))
  ])
  (section "persist" [
    (kv "path" p.path)
    (kvRaw "directories" (list p.directories))
    (kvRaw "files" (list p.files))
  ])
  (section "retention" [
    (kv "keep_last" r.keepLast)
    (kv "keep_within" r.keepWithin)
    (kv "keep_daily" r.keepDaily)
    (kv "keep_weekly" r.keepWeekly)
    (kv "keep_monthly" r.keepMonthly)
    (kv "timezone" r.timezone)
    (kv "min_free" r.minFree)
  ])
  (section "boot" [ (kv "on_failure" s.onFailure) ])
])
+ concatStringsSep "" (map user p.users)
