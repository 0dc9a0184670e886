# Stand-ins for `pkgs` and `utils` (no nixpkgs here). runCommand keeps its inputs so that tests/run can
# execute the build command of the checked config file with the real tabula binary.
lib:
let
  store = name: "/nix/store/00000000000000000000000000000000-${name}";
  hex = {
    " " = "20"; "!" = "21"; "\"" = "22"; "#" = "23"; "$" = "24"; "%" = "25"; "&" = "26"; "'" = "27";
    "(" = "28"; ")" = "29"; "*" = "2a"; "+" = "2b"; "," = "2c"; ";" = "3b"; "<" = "3c"; "=" = "3d";
    ">" = "3e"; "@" = "40"; "[" = "5b"; "\\" = "5c"; "]" = "5d"; "^" = "5e"; "`" = "60"; "{" = "7b";
    "|" = "7c"; "}" = "7d"; "~" = "7e"; "-" = "2d";
  };
  escapeC = chars: builtins.replaceStrings chars (map (c: "\\x${hex.${c}}") chars);
  trim = s: lib.removeSuffix "/" (lib.removePrefix "/" s);
in
{
  pkgs = {
    tabula = { type = "derivation"; name = "tabula"; outPath = store "tabula"; };
    writeText = name: text: { type = "derivation"; inherit name text; outPath = store name; };
    runCommand = name: env: buildCommand: {
      type = "derivation"; inherit name env buildCommand; outPath = store name;
    };
  };
  # nixos/lib/utils.nix (24.05), for the paths used here.
  utils = rec {
    escapeSystemdPath = s:
      let t = if s == "/" then s else trim s; in
      builtins.replaceStrings [ "/" ] [ "-" ]
        ((s: if lib.hasPrefix "." s then "\\x2e" + lib.removePrefix "." s else s)
          (escapeC (builtins.attrNames hex) t));
    pathsNeededForBoot = [ "/" "/nix" "/nix/store" "/var" "/var/log" "/var/lib" "/var/lib/nixos" "/etc" "/usr" ];
    fsNeededForBoot = fs: fs.neededForBoot || builtins.elem fs.mountPoint pathsNeededForBoot;
  };
}
