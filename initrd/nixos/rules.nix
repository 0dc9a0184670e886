# The rules `tabula check` applies to a configuration (src/config.rs), restated for evaluation time so
# that a NixOS configuration that evaluates never stops a boot with a config error. Pure builtins (no
# nixpkgs lib), like toml.nix. `errors settings` returns one message per problem; `settings` is the
# resolved form the module builds from services.tabula (see toml.nix). The generated file is still checked
# by the real `tabula check` when it is built: these rules only have to be at least as strict.
let
  inherit (builtins) all any attrNames concatMap concatStringsSep elem elemAt filter foldl' genList head
    isInt isString length match split stringLength substring toJSON;

  components = s: filter isString (split "/" s);
  hasPrefix = p: s: substring 0 (stringLength p) s == p;
  lower = builtins.replaceStrings
    [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  # "a" is under "a" and under its ancestors: component-wise, as Rust's Path::starts_with.
  startsWithPath = prefix: path: prefix == "/" || path == prefix || hasPrefix "${prefix}/" path;
  parentsOf = path:
    let cs = components (substring 1 (stringLength path) path); n = length cs; in
    genList (i: "/" + concatStringsSep "/" (genList (j: elemAt cs j) (i + 1))) (n - 1);
  forbidden = [ "/proc" "/sys" "/dev" "/run" ];
  forbiddenPrefix = path: let f = filter (p: startsWithPath p path) forbidden; in if f == [ ] then null else head f;

  checkComponents = whole: rest:
    let cs = components rest; in
    if any (c: c == "..") cs then "'${whole}' contains '..': write the path without it"
    else if any (c: stringLength c > 255) cs then "'${whole}' has a component longer than 255 bytes"
    else if any (c: c == "" || c == ".") cs then
      "'${whole}' is not normalised: write '${if hasPrefix "/" whole then "/" else ""}${concatStringsSep "/" (filter (c: c != "" && c != ".") cs)}'"
    else null;

  # null when fine, else why not (the wording of src/config.rs).
  absoluteError = s:
    if !(hasPrefix "/" s) then "'${s}' is not absolute: write it from '/', such as '/${s}'"
    else if s == "/" then null
    else checkComponents s (substring 1 (stringLength s) s);
  relativeError = s:
    if hasPrefix "/" s then "'${s}' must be relative"
    else if s == "" then "an empty path names nothing"
    else checkComponents s s;

  subvolumeError = name:
    if name == "" then "a subvolume name cannot be empty"
    else if stringLength name > 255 then "a subvolume name is at most 255 bytes"
    else if name == "." || name == ".." || match ".*/.*" name != null then "'${name}' is not a single path component: name a subvolume in the top level"
    else null;

  nameOk = n: stringLength n <= 256 && match "[A-Za-z0-9_.][A-Za-z0-9_.-]*[$]?" n != null;
  modeOk = m: match "(0o)?[0-7]{3,4}" m != null;
  idOk = n: isInt n && n >= 0 && n <= 4294967294;

  # humantime's units, all of which systemd's time spans accept too (TimeoutStartSec is derived from it).
  unit = "(nsec|ns|usec|us|msec|ms|seconds|second|sec|s|minutes|minute|min|m|hours|hour|hr|h|days|day|d|weeks|week|w|months|month|M|years|year|y)";
  durationOk = s: match "[ ]*([0-9]+[ ]*${unit}[ ]*)+" s != null;
  minFreeOk = s:
    let
      pct = match "[ ]*([0-9]+([.][0-9]+)?)[ ]*%[ ]*" s;
      size = match "[ ]*([0-9]+([.][0-9]+)?)[ ]*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?[ ]*" (lower s);
    in
    (pct != null && builtins.fromJSON (head pct) < 100) || size != null;
  countOk = c: c == null || c == "all" || (isInt c && c >= 0);
  timezoneOk = tz: match "[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*" tz != null;

  deviceError = d:
    let
      uuid = match "UUID=(.*)" d;
      label = match "LABEL=(.*)" d;
      hex = if uuid == null then "" else builtins.replaceStrings [ "-" ] [ "" ] (head uuid);
    in
    if uuid != null then
      (if match "[0-9a-fA-F]{32}" hex != null then null
       else "`UUID=` takes a filesystem UUID such as 01234567-89ab-cdef-0123-456789abcdef")
    else if label != null then
      (if head label != "" && stringLength (head label) <= 255 then null else "`LABEL=` takes a btrfs label of 1 to 255 bytes")
    else if hasPrefix "/" d then absoluteError d
    else "write an absolute device path (/dev/…), `UUID=…` or `LABEL=…`";

  # Every entry with its target, kind and the option that defined it, in definition order.
  entriesOf = p:
    map (e: e // { kind = "directory"; target = e.path; where = "persist.directories"; }) p.directories
    ++ map (e: e // { kind = "file"; target = e.path; where = "persist.files"; }) p.files
    ++ concatMap (u:
      map (e: e // { kind = "directory"; target = "${u.home}/${e.path}"; where = "persist.users.${u.name}.directories"; user' = u; }) u.directories
      ++ map (e: e // { kind = "file"; target = "${u.home}/${e.path}"; where = "persist.users.${u.name}.files"; user' = u; }) u.files) p.users;

  errors = s:
    let
      l = s.layout; r = s.retention; p = s.persist;
      names = [ [ "root" l.root ] [ "blank" l.blank ] [ "oldRoots" l.oldRoots ] [ "persist" l.persist ] ];
      layout =
        (let e = deviceError l.device; in if e == null then [ ] else [ "device: ${e}" ])
        ++ (if durationOk l.deviceTimeout then [ ] else [ "deviceTimeout: '${l.deviceTimeout}' is not a duration: write one such as \"30s\" or \"2min\"" ])
        ++ concatMap (n: let e = subvolumeError (elemAt n 1); in if e == null then [ ] else [ "subvolumes.${head n}: ${e}" ]) names
        ++ (let dup = filter (n: length (filter (m: elemAt m 1 == elemAt n 1) names) > 1) names; in
            if dup == [ ] then [ ] else [ "subvolumes: ${concatStringsSep ", " (map head dup)} name the same subvolume: give each its own name" ]);
      retention =
        (if r.keepWithin == null || durationOk r.keepWithin then [ ] else [ "retention.keepWithin: '${r.keepWithin}' is not a duration: write one such as \"2w\" or \"30d\"" ])
        ++ concatMap (k: if countOk r.${k} then [ ] else [ "retention.${k} must be a count (0 turns it off) or \"all\"" ]) [ "keepDaily" "keepWeekly" "keepMonthly" ]
        ++ (if r.timezone == null || timezoneOk r.timezone then [ ] else [ "retention.timezone: '${r.timezone}' is not an IANA time zone name such as \"Europe/Berlin\" or \"UTC\"" ])
        ++ (if r.minFree == null || minFreeOk r.minFree then [ ] else [ "retention.minFree: '${r.minFree}': write a percentage below 100 (\"10%\") or a size (\"20GiB\", \"500M\")" ]);
      persistPath =
        let e = absoluteError p.path; in
        if e != null then [ "persist.path: ${e}" ]
        else if p.path == "/" then [ "persist.path: persistent storage cannot be mounted on '/': use a directory such as \"/persist\"" ]
        else if forbiddenPrefix p.path != null then [ "persist.path: '${p.path}' is in '${forbiddenPrefix p.path}', which the kernel or init manages" ]
        else [ ];
      users = concatMap (u:
        (if nameOk u.name then [ ] else [ "persist.users.${u.name}: '${u.name}' is not a valid user name" ])
        ++ (let e = absoluteError u.home; in
            if e != null then [ "persist.users.${u.name}.home: ${e}" ]
            else if u.home == "/" then [ "persist.users.${u.name}.home: '/' cannot be a home here: name the real home" ] else [ ])
        ++ concatMap (k: if u.${k} == null || idOk u.${k} then [ ] else [ "persist.users.${u.name}.${k}: ${toJSON u.${k}} is not a valid id (0 to 4294967294)" ]) [ "uid" "gid" ]) p.users;
      all' = entriesOf p;
      entry = e:
        let
          pathErr = if e ? user' then relativeError e.path else absoluteError e.path;
          pathMsg = if e ? user' then "${pathErr} (user entries are relative to the home '${e.user'.home}')" else pathErr;
        in
        (if pathErr != null then [ "${e.where}: ${pathMsg}" ] else [ ])
        ++ (if e.mode == null || modeOk e.mode then [ ] else [ "${e.where}: '${e.path}': mode '${e.mode}' is not an octal mode: write 3 or 4 octal digits, such as \"0755\"" ])
        ++ (if e.how == null || e.how == "bind" || ((e.how == "symlink" || e.how == "copy") && e.kind == "file") then [ ]
            else if e.how == "symlink" || e.how == "copy" then [ "${e.where}: '${e.path}': how = \"${e.how}\" is for files only: directories are always bind-mounted" ]
            else [ "${e.where}: '${e.path}': unknown method '${e.how}': use \"bind\", \"copy\" or \"symlink\"" ])
        ++ concatMap (k: if e.${k} == null || idOk e.${k} then [ ] else [ "${e.where}: '${e.path}': ${k} ${toJSON e.${k}} is not a valid id (0 to 4294967294)" ]) [ "user" "group" ];
      # Overlaps are only judged among entries whose own paths are fine (as tabula does).
      valid = filter (e: (if e ? user' then relativeError e.path else absoluteError e.path) == null) all';
      overlap = foldl' (acc: e:
        let
          t = e.target;
          first = filter (x: x.target == t) acc.seen;
          msg =
            if t == "/" then "'/' cannot be persisted: list the directories under it instead"
            else if forbiddenPrefix t != null then "'${t}' is in '${forbiddenPrefix t}', which the kernel or init manages: it cannot be persisted"
            else if startsWithPath p.path t then "'${t}' is inside persistent storage '${p.path}' itself"
            else if startsWithPath t p.path then "'${t}' contains persistent storage '${p.path}': a bind mount there would hide it"
            else if first != [ ] then "'${t}' is listed twice (also in ${(head first).where}): remove one (lists from several modules are concatenated)"
            else null;
        in
        if msg == null then acc // { seen = acc.seen ++ [ e ]; }
        else acc // { errors = acc.errors ++ [ "${e.where}: ${msg}" ]; }) { seen = [ ]; errors = [ ]; } valid;
      nesting = concatMap (e:
        let anc = filter (x: elem x.target (parentsOf e.target)) overlap.seen; in
        if anc == [ ] then [ ]
        else
          let a = head anc; in
          if a.kind == "directory" then [ "${e.where}: '${e.target}' is inside the directory entry '${a.target}' (${a.where}): persisting '${a.target}' already keeps it; remove one of the two" ]
          else [ "${e.where}: '${e.target}' is below the file entry '${a.target}' (${a.where}): a file cannot contain anything" ]) overlap.seen;
    in
    layout ++ retention ++ persistPath ++ users ++ concatMap entry all' ++ overlap.errors ++ nesting;
in
{
  inherit errors entriesOf absoluteError relativeError durationOk parentsOf startsWithPath;
}
