# The part of nixpkgs' `lib` that the project's Nix files use, written from its documented
# behaviour. Stricter than the real one where that catches mistakes (getExe needs mainProgram).
let
  inherit (builtins) all attrNames attrValues concatStringsSep elem filter foldl' isAttrs
    isBool isInt isList isPath isString listToAttrs map;

  lib = rec {
    inherit all;

    genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
    filterAttrs = pred: set: listToAttrs (map (n: { name = n; value = set.${n}; })
      (filter (n: pred n set.${n}) (attrNames set)));
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalAttrs = cond: set: if cond then set else { };
    hasPrefix = prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
    unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
    recursiveUpdate = a: b: a // builtins.mapAttrs
      (n: v: if isAttrs v && isAttrs (a.${n} or null) && !isDerivation v then recursiveUpdate a.${n} v else v)
      b;
    isDerivation = v: isAttrs v && (v.type or null) == "derivation";
    versionAtLeast = v: min: builtins.compareVersions v min >= 0;
    assertMsg = pred: msg: pred || throw msg;
    importTOML = path: builtins.fromTOML (builtins.readFile path);

    getBin = drv: drv.bin or drv;
    getExe' = drv: name: "${getBin drv}/bin/${name}";
    getExe = drv: getExe' drv (drv.meta.mainProgram or (throw "lib.getExe: ${drv.name} has no meta.mainProgram"));

    licenses.asl20 = { spdxId = "Apache-2.0"; };
    platforms.linux = [ "x86_64-linux" "aarch64-linux" ];
    literalExpression = text: { _type = "literalExpression"; inherit text; };

    # Module system: the properties, as the real one represents them (see ./nixos.nix).
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkMerge = contents: { _type = "merge"; inherit contents; };
    mkOverride = priority: content: { _type = "override"; inherit priority content; };
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption = name: mkOption { type = types.bool; default = false; description = "Whether to enable ${name}."; };

    types =
      let
        mk = description: check: { _type = "option-type"; inherit description check; };
      in
      {
        bool = mk "boolean" isBool;
        str = mk "string" isString;
        int = mk "signed integer" isInt;
        port = mk "16 bit unsigned integer" (x: isInt x && x >= 0 && x <= 65535);
        path = mk "path" (x: isPath x || (isString x && hasPrefix "/" x));
        package = mk "package" isDerivation;
        attrs = mk "attribute set" isAttrs;
        anything = mk "anything" (_: true);
        nullOr = t: mk "null or ${t.description}" (x: x == null || t.check x);
        listOf = t: mk "list of ${t.description}" (x: isList x && all t.check x);
        attrsOf = t: mk "attribute set of ${t.description}" (x: isAttrs x && all t.check (attrValues x));
        enum = values: mk "one of ${concatStringsSep ", " (map builtins.toJSON values)}" (x: elem x values);
      };

    fileset = import ./fileset.nix { inherit hasPrefix; };
  };
in
lib
