# lib.fileset, for the forms the project uses: a file set is a list of existing paths.
{ hasPrefix }:
let
  inherit (builtins) any concatMap isList pathExists toString;
  coerce = x:
    if isList x then x
    else if pathExists x then [ x ]
    else throw "lib.fileset: ${toString x} does not exist (use lib.fileset.maybeMissing)";
in
{
  unions = concatMap coerce;
  maybeMissing = path: if pathExists path then [ path ] else [ ];
  toSource = { root, fileset }:
    let
      roots = map toString (coerce fileset);
      keep = path: type: any (r: path == r || hasPrefix "${r}/" path || (type == "directory" && hasPrefix "${path}/" r)) roots;
    in
    builtins.path { path = root; name = "source"; filter = keep; };
}
