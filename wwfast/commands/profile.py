"""`wwfast profile add|set|unset|delete|list`: edit and show profiles, like `wwctl profile`."""
import argparse

from wwfast.define import entryedit, nodeedit, nodefile, provenance
from wwfast.errors import UsageError
from wwfast.commands import entries, fields
from wwfast.commands.fields import known_names
from wwfast.commands.listing import mask_secrets, print_json, print_table, print_yaml, source_rows


def register(subparsers):
    profile = subparsers.add_parser("profile", help="add, change, remove and list profiles")
    sub = profile.add_subparsers(dest="profile_command", metavar="ACTION", required=True)

    p = sub.add_parser("add", help="add profiles")
    p.add_argument("names", nargs="+", metavar="PROFILE")
    fields.add_value_flags(p, node=False)
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("set", aliases=["modify"], help="change fields of profiles",
                       epilog="The change is shown and, on a terminal, asked for (--yes: not asked).\n\nexample:\n"
                              "  wwfast profile set default --kernelargs console=ttyS0,quiet --yes\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", metavar="PROFILE")
    p.add_argument("-y", "--yes", action="store_true", help="write without showing the change and asking")
    fields.add_value_flags(p, node=False)
    p.set_defaults(func=cmd_set)

    p = sub.add_parser("unset", help="clear fields of profiles")
    p.add_argument("names", nargs="+", metavar="PROFILE")
    fields.add_unset_flags(p, node=False)
    p.set_defaults(func=cmd_unset)

    p = sub.add_parser("delete", aliases=["rm"], help="remove profiles (refused while a node uses them)")
    p.add_argument("names", nargs="+", metavar="PROFILE")
    p.add_argument("-y", "--yes", action="store_true", help="accepted for wwctl compatibility (no prompt)")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("list", aliases=["ls"], help="show profiles")
    p.add_argument("names", nargs="*", metavar="PROFILE")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-a", "--all", dest="show_all", action="store_true",
                       help="every field (with inherited ones) and where it came from")
    group.add_argument("-y", "--yaml", action="store_true", help="YAML of the profiles as written")
    group.add_argument("-j", "--json", action="store_true", help="JSON of the profiles as written")
    p.add_argument("--show-passwords", action="store_true", help="show BMC passwords (masked otherwise)")
    p.set_defaults(func=cmd_list)

    entries.register_profile(sub)


def _split_names(names):
    return [n.strip() for name in names for n in name.split(",") if n.strip()]


def _done(verb, names):
    print(f"{verb} {len(names)} profile{'s' if len(names) != 1 else ''}: {','.join(names)}")
    return 0


def cmd_add(args):
    names = _split_names(args.names)

    def change(doc):
        for name in names:
            fields.apply_values(doc.add("nodeprofiles", name), args, node=False)

    nodeedit.edit(args.conf, change, **known_names(args))
    return _done("added", names)


def cmd_set(args):
    names = _split_names(args.names)

    def change(doc):
        for name in names:
            if not fields.apply_values(doc.entry("nodeprofiles", name), args, node=False):
                raise UsageError("nothing to set: give at least one field flag (see --help)")

    nodeedit.edit(args.conf, change, **known_names(args),
                  review=entryedit.reviewer(entries.confirmer(args.yes)))
    return _done("updated", names)


def cmd_unset(args):
    names = _split_names(args.names)

    def change(doc):
        for name in names:
            if not fields.apply_unset(doc.entry("nodeprofiles", name), args, node=False):
                raise UsageError("nothing to unset: give at least one field switch (see --help)")

    nodeedit.edit(args.conf, change, **known_names(args))
    return _done("updated", names)


def cmd_delete(args):
    names = _split_names(args.names)

    def change(doc):
        for name in names:
            doc.delete("nodeprofiles", name)

    nodeedit.edit(args.conf, change, **known_names(args))
    return _done("deleted", names)


def cmd_list(args):
    config = nodefile.read_config(args.conf)
    names = _split_names(args.names) or sorted(config.profiles)
    missing = [n for n in names if n not in config.profiles]
    if missing:
        raise UsageError(f"no such profile: {', '.join(missing)}")
    secret = (lambda d: d) if args.show_passwords else mask_secrets
    if args.json or args.yaml:
        data = secret({name: config.profiles[name] for name in names})
        (print_json if args.json else print_yaml)(data)
    elif args.show_all:
        for i, name in enumerate(names):
            if i:
                print()
            view, sources = provenance.resolve_profile(config, name)
            view = secret(view)
            print(f"PROFILE: {name}")
            print_table(["FIELD", "PROFILE", "VALUE"], source_rows(view, sources, skip=()))
    else:
        rows = [[name, ",".join(config.profiles[name].get("profiles", [])), config.profiles[name].get("comment", "")]
                for name in names]
        print_table(["PROFILE NAME", "PROFILES", "COMMENT/DESCRIPTION"], rows)
    return 0
