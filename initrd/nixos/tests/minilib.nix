# A small stand-in for nixpkgs' `lib` (builtins only), enough to evaluate the tabula module offline:
# CI has no nixpkgs. It implements the part of the module system the module relies on, with nixpkgs'
# semantics: option declarations, definitions merged by type (lists concatenate, attribute sets merge,
# submodules are evaluated with their own definitions), mkIf / mkMerge / mkOverride (mkDefault,
# mkForce) / mkOrder (mkBefore, mkAfter), `imports`, and an error for a definition of an undeclared
# option. The same module and test configurations were also evaluated against nixpkgs 24.05 by hand
# (see the README's NixOS section).
let
  inherit (builtins) attrNames concatMap elem filter foldl' genList head isAttrs isBool isFunction isInt
    isList isString length listToAttrs mapAttrs sort tail concatStringsSep;

  unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
  optional = c: x: if c then [ x ] else [ ];
  optionals = c: xs: if c then xs else [ ];
  optionalAttrs = c: a: if c then a else { };
  optionalString = c: s: if c then s else "";
  hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
  hasSuffix = sfx: s:
    let ls = builtins.stringLength s; lx = builtins.stringLength sfx;
    in ls >= lx && builtins.substring (ls - lx) lx s == sfx;
  removePrefix = p: s:
    if hasPrefix p s then builtins.substring (builtins.stringLength p) (builtins.stringLength s) s else s;
  removeSuffix = sfx: s:
    if hasSuffix sfx s then builtins.substring 0 (builtins.stringLength s - builtins.stringLength sfx) s else s;
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
  mapAttrsToList = f: a: map (n: f n a.${n}) (attrNames a);
  filterAttrs = p: a: listToAttrs (concatMap (n: optional (p n a.${n}) { name = n; value = a.${n}; }) (attrNames a));
  last = l: builtins.elemAt l (length l - 1);
  showLoc = concatStringsSep ".";
  toLower = builtins.replaceStrings
    [ "A" "B" "C" "D" "E" "F" "G" "H" "I" "J" "K" "L" "M" "N" "O" "P" "Q" "R" "S" "T" "U" "V" "W" "X" "Y" "Z" ]
    [ "a" "b" "c" "d" "e" "f" "g" "h" "i" "j" "k" "l" "m" "n" "o" "p" "q" "r" "s" "t" "u" "v" "w" "x" "y" "z" ];
  escapeShellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  # --- properties -----------------------------------------------------------------------------------
  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkDefault = mkOverride 1000;
  mkOptionDefault = mkOverride 1500;
  mkForce = mkOverride 50;
  mkOrder = priority: content: { _type = "order"; inherit priority content; };
  mkBefore = mkOrder 500;
  mkAfter = mkOrder 1500;
  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = name: mkOption { type = types.bool; default = false; example = true; description = "Whether to enable ${name}."; };
  literalExpression = text: { _type = "literalExpression"; inherit text; };

  isOption = x: isAttrs x && (x._type or null) == "option";
  typeOf = x: if isAttrs x then x._type or null else null;

  # Pushes mkIf/mkMerge/mkOverride down one level of attribute sets: a list of plain attribute sets
  # whose values carry the properties (conditions are not evaluated here, as in nixpkgs).
  pushDown = cfg:
    let t = typeOf cfg; in
    if t == "merge" then concatMap pushDown cfg.contents
    else if t == "if" then map (mapAttrs (_: v: mkIf cfg.condition v)) (pushDown cfg.content)
    else if t == "override" then map (mapAttrs (_: v: mkOverride cfg.priority v)) (pushDown cfg.content)
    else if isAttrs cfg then [ cfg ]
    else throw "tabula minilib: expected an attribute set of definitions, got ${builtins.typeOf cfg}";

  # A definition's values with their priority and order, mkIf evaluated.
  discharge = prio: ord: d:
    let t = typeOf d; in
    if t == "merge" then concatMap (discharge prio ord) d.contents
    else if t == "if" then (if d.condition then discharge prio ord d.content else [ ])
    else if t == "override" then discharge d.priority ord d.content
    else if t == "order" then discharge prio d.priority d.content
    else [ { value = d; priority = prio; order = ord; } ];

  # nixpkgs: the definitions with the highest priority (lowest number) win; then sorted by order.
  effective = defs:
    let
      all = concatMap (discharge 100 1000) defs;
      best = foldl' (m: d: if d.priority < m then d.priority else m) 9999 all;
      kept = filter (d: d.priority == best) all;
    in map (d: d.value) (sort (a: b: a.order < b.order) kept);

  mergeDefs = loc: type: defs:
    let
      values = effective defs;
      bad = filter (v: !(type.check v)) values;
    in
    if bad != [ ] then throw "The option `${showLoc loc}' has a value of the wrong type (expected ${type.description}): ${builtins.toJSON (head bad)}"
    else type.merge loc values;

  equalMerge = loc: values:
    if values == [ ] then throw "The option `${showLoc loc}' is used but not defined."
    else if all (v: v == head values) values then head values
    else throw "The option `${showLoc loc}' has conflicting definition values: ${builtins.toJSON values}";
  all = p: l: foldl' (a: x: a && p x) true l;
  any = p: l: foldl' (a: x: a || p x) false l;

  mkType = description: check: merge: { inherit description check merge; };

  types = rec {
    str = mkType "string" isString equalMerge;
    nonEmptyStr = mkType "non-empty string" (s: isString s && s != "") equalMerge;
    lines = mkType "strings concatenated with \"\\n\"" isString (_: vs: concatStringsSep "\n" vs);
    bool = mkType "boolean" isBool equalMerge;
    int = mkType "signed integer" isInt equalMerge;
    ints = {
      positive = mkType "positive integer" (v: isInt v && v > 0) equalMerge;
      unsigned = mkType "unsigned integer" (v: isInt v && v >= 0) equalMerge;
    };
    path = mkType "path" (v: isString v || builtins.isPath v) equalMerge;
    package = mkType "package" (v: isAttrs v || isString v) equalMerge;
    attrs = mkType "attribute set" isAttrs (_: vs: foldl' (a: b: a // b) { } vs);
    # systemd's unitConfig/serviceConfig: equal values merge, lists concatenate, sets merge.
    anything = mkType "anything" (_: true) (loc: vs:
      if all isList vs then builtins.concatLists vs
      else if all isAttrs vs then
        genAttrs (unique (concatMap attrNames vs)) (n: anything.merge (loc ++ [ n ]) (concatMap (v: optional (v ? ${n}) v.${n}) vs))
      else equalMerge loc vs);
    enum = values: mkType "one of ${builtins.toJSON values}" (v: elem v values) equalMerge;
    nullOr = t: mkType "null or ${t.description}" (v: v == null || t.check v) (loc: vs:
      if all (v: v == null) vs then null
      else if any (v: v == null) vs then throw "The option `${showLoc loc}' is defined both null and not null"
      else t.merge loc vs);
    either = a: b: mkType "${a.description} or ${b.description}" (v: a.check v || b.check v) (loc: vs:
      if all a.check vs then a.merge loc vs
      else if all b.check vs then b.merge loc vs
      else throw "The option `${showLoc loc}' mixes ${a.description} and ${b.description} definitions");
    oneOf = ts: foldl' either (head ts) (tail ts);
    listOf = t: mkType "list of ${t.description}" isList (loc: vs:
      let items = builtins.concatLists vs; in
      genList (i: mergeDefs (loc ++ [ "[${toString i}]" ]) t [ (builtins.elemAt items i) ]) (length items));
    attrsOf = t: mkType "attribute set of ${t.description}" isAttrs (loc: vs:
      let names = unique (concatMap attrNames vs); in
      genAttrs names (n: mergeDefs (loc ++ [ n ]) t (concatMap (v: optional (v ? ${n}) v.${n}) vs)));
    lazyAttrsOf = attrsOf;
    submodule = m: mkType "submodule" (v: isAttrs v || isFunction v) (loc: vs:
      # Definitions of a submodule only define config (nixpkgs: shorthandOnlyDefinesConfig).
      (evalModules { modules = [ m ] ++ map (v: args: { config = if isFunction v then v args else v; }) vs; specialArgs = { name = last loc; }; prefix = loc; }).config);
  };

  # --- evaluation -------------------------------------------------------------------------------------
  collect = args: ms: concatMap (m:
    let
      m' = if isFunction m then m args else if isString m || builtins.isPath m then import m args else m;
      structured = m' ? options || m' ? config || m' ? imports;
      this = if structured then { options = m'.options or { }; config = m'.config or { }; }
             else { options = { }; config = removeAttrs m' [ "_file" ]; };
    in [ this ] ++ collect args (m'.imports or [ ])) ms;

  # Merges option declarations (a tree whose leaves are mkOption results).
  mergeDecls = a: b:
    if isOption a || isOption b then throw "tabula minilib: option declared twice"
    else a // mapAttrs (n: v: if a ? ${n} && isAttrs v && isAttrs a.${n} then mergeDecls a.${n} v else v) b;

  evalModules = { modules, specialArgs ? { }, prefix ? [ ] }:
    let
      args = specialArgs // { inherit lib config options; };
      collected = collect args modules;
      options = foldl' mergeDecls { } (map (m: m.options) collected);
      walk = loc: node: defs:
        if isOption node then
          (if defs == [ ] && node ? default then node.default
           else mergeDefs loc (node.type or types.anything) (defs ++ optional (node ? default) (mkOptionDefault node.default)))
        else
          let
            flat = concatMap pushDown defs;
            unknown = filter (n: !(node ? ${n})) (unique (concatMap attrNames flat));
          in
          if unknown != [ ] then throw "The option `${showLoc (loc ++ [ (head unknown) ])}' does not exist (tabula minilib: declare it in tests/nixos-options.nix)."
          else mapAttrs (n: sub: walk (loc ++ [ n ]) sub (concatMap (d: optional (d ? ${n}) d.${n}) flat)) node;
      config = walk prefix options (map (m: m.config) collected);
    in { inherit config options; };

  lib = {
    inherit mkIf mkMerge mkOverride mkDefault mkForce mkOrder mkBefore mkAfter mkOption mkEnableOption
      mkOptionDefault literalExpression types evalModules unique optional optionals optionalAttrs optionalString
      hasPrefix hasSuffix removePrefix removeSuffix genAttrs mapAttrsToList filterAttrs all any last toLower
      escapeShellArg;
    inherit (builtins) attrNames attrValues concatStringsSep concatMap elem filter head length map mapAttrs;
  };
in
lib
