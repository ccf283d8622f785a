# A miniature of the NixOS module system, enough to evaluate the project's module and VM test
# nodes: imports, option declarations with types and defaults, mkIf / mkMerge / mkDefault /
# mkForce, list concatenation, conflicts. Options that NixOS declares (systemd.services,
# services.redis, ...) are free-form here: any value is accepted and merged. A free-form
# setting whose every definition is switched off by mkIf reads as null. A level that declares
# options (services.tributary, ...) accepts no other name.
lib:
let
  inherit (builtins) all attrNames concatLists concatMap elem filter foldl' functionArgs head
    intersectAttrs isAttrs isFunction isList isPath isString zipAttrsWith;

  kind = v: if isAttrs v then v._type or null else null;
  isOption = v: kind v == "option";
  isTree = d:
    if !(isAttrs d) || lib.isDerivation d then false
    else if elem (kind d) [ "if" "override" ] then isTree d.content
    else if kind d == "merge" then all isTree d.contents
    else kind d == null;

  # Every module with its imports, as { options, config }.
  collect = args: modules: concatMap
    (m:
      let
        f = if isPath m || isString m then import m else m;
        v = if isFunction f then f (intersectAttrs (functionArgs f) args) else f;
        structured = v ? options || v ? config;
      in
      [{
        options = v.options or { };
        config = if structured then v.config or { } else removeAttrs v [ "imports" "_file" "key" "meta" "disabledModules" ];
      }] ++ collect args (v.imports or [ ]))
    modules;

  mergeDecls = foldl' mergeDecl { };
  mergeDecl = a: b: a // builtins.mapAttrs
    (n: v:
      if !(a ? ${n}) then v
      else if isOption v || isOption a.${n} then throw "option ${n} is declared twice"
      else mergeDecl a.${n} v)
    b;

  # A tree-shaped definition as an attribute set of definitions; conditions stay unevaluated.
  pushDown = path: d:
    if kind d == "if" then builtins.mapAttrs (_: lib.mkIf d.condition) (pushDown path d.content)
    else if kind d == "override" then builtins.mapAttrs (_: lib.mkOverride d.priority) (pushDown path d.content)
    else if kind d == "merge" then zipAttrsWith (_: lib.mkMerge) (map (pushDown path) d.contents)
    else if isTree d then d
    else throw "${path}: expected an attribute set of settings";

  # A leaf's definitions as [ { prio, value } ], the switched-off ones dropped.
  discharge = prio: d:
    if kind d == "if" then (if d.condition then discharge prio d.content else [ ])
    else if kind d == "override" then discharge d.priority d.content
    else if kind d == "merge" then concatMap (discharge prio) d.contents
    else [{ inherit prio; value = d; }];

  merge = path: type: defs:
    let
      best = foldl' (m: d: if d.prio < m then d.prio else m) 10000 defs;
      values = map (d: d.value) (filter (d: d.prio == best) defs);
      value =
        if values == [ ] then throw "The option `${path}' is used but not defined."
        else if all isList values then concatLists values
        else if all (v: isAttrs v && !lib.isDerivation v) values then foldl' lib.recursiveUpdate { } values
        else if all (v: v == head values) values then head values
        else throw "The option `${path}' has conflicting definition values.";
    in
    if type == null || type.check value then value
    else throw "The option `${path}' is not of type `${type.description}'.";

  # Free-form where nothing is declared; a level that declares options accepts no other name.
  evalTree = path: decls: defs:
    let
      byName = zipAttrsWith (_: ds: ds) (map (pushDown path) defs);
      strict = builtins.any isOption (builtins.attrValues decls);
    in
    lib.genAttrs (attrNames decls ++ attrNames byName) (n:
      let
        p = if path == "" then n else "${path}.${n}";
        ds = byName.${n} or [ ];
        decl = decls.${n} or null;
        active = concatMap (discharge 100) ds;
      in
      if strict && decl == null then throw "The option `${p}' does not exist."
      else if isOption decl then
        merge p decl.type (active ++ lib.optional (decl ? default) { prio = 1500; value = decl.default; })
      else if decl != null then evalTree p decl ds
      else if ds != [ ] && all isTree ds then evalTree p { } ds
      else if active == [ ] then null
      else merge p null active);
in
{
  evalModules = { modules, specialArgs ? { } }:
    let
      all' = collect (specialArgs // { inherit lib config; options = decls; }) modules;
      decls = mergeDecls (map (m: m.options) all');
      config = evalTree "" decls (map (m: m.config) all');
    in
    { inherit config; options = decls; };
}
