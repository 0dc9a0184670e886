# Renders a unit definition (the module's systemd.services.<name> attributes) as unit file text, in a
# fixed order, for the golden files. nixpkgs renders the same keys (its order differs).
unit:
let
  inherit (builtins) attrNames concatStringsSep concatMap isList isBool toString filter;
  show = v: if isBool v then (if v then "true" else "false") else toString v;
  kv = k: v: if isList v then map (x: "${k}=${show x}") v else [ "${k}=${show v}" ];
  list = k: v: if v == [ ] then [ ] else [ "${k}=${concatStringsSep " " v}" ];
  attrs = a: concatMap (k: kv k a.${k}) (attrNames a);
  section = name: ls: if ls == [ ] then "" else "[${name}]\n" + concatStringsSep "\n" ls + "\n";
in
concatStringsSep "\n" (filter (s: s != "") [
  (section "Unit" (
    (if unit.description == "" then [ ] else [ "Description=${unit.description}" ])
    ++ list "Wants" unit.wants ++ list "Requires" unit.requires
    ++ list "After" unit.after ++ list "Before" unit.before
    ++ attrs unit.unitConfig))
  (section "Service" (attrs (unit.serviceConfig or { })))
  (section "Timer" (attrs (unit.timerConfig or { })))
  (section "Path" (attrs (unit.pathConfig or { })))
  (section "Install" (list "WantedBy" unit.wantedBy ++ list "RequiredBy" unit.requiredBy))
])
