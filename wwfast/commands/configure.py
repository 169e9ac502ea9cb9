"""`wwfast configure SERVICE`: configuration files for the services around provisioning.

`dhcp`, `hosts`, `tftp` and `--all` (those three) read the node file (checked as the define stage checks it)
and the settings, so one command takes a changed node to the service. Files are written atomically and only
when their content changes, and the command says what changed; `--show` prints what would be written and
writes nothing. `cache`: the nginx configuration of a cache host (wwfast.configure.nginx_cache).
`tls`: the HTTPS key and certificate (wwfast.configure.tls).
"""
import argparse
import os
import sys

from wwfast import fsutil, records
from wwfast.builder import inventory
from wwfast.configure import dhcp, files, hostsfile, nginx_cache, plan, tftproot, tls
from wwfast.define import nodefile, nodes, settings
from wwfast.errors import ConfigError, UsageError


def register(subparsers):
    p = subparsers.add_parser("configure", help="write the DHCP configuration and /etc/hosts, fill the TFTP root",
                              description=__doc__.splitlines()[0])
    p.add_argument("--all", action="store_true", help="dhcp (when dhcp: enabled), tftp and hosts")
    p.add_argument("--show", action="store_true", help="print what would be written; write nothing")
    p.add_argument("--restart", action="store_true",
                   help="restart the DHCP service through systemd when its configuration changed")
    p.set_defaults(func=cmd_configure, what=None)
    sub = p.add_subparsers(dest="what", metavar="SERVICE")
    d = sub.add_parser("dhcp", help="the dnsmasq (default) or ISC dhcpd configuration from the nodes and settings")
    # SUPPRESS: a subcommand's flag must not reset the same flag given before the subcommand
    d.add_argument("--show", action="store_true", default=argparse.SUPPRESS, help="print the configuration; write nothing")
    d.add_argument("--restart", action="store_true", default=argparse.SUPPRESS,
                   help="restart the DHCP service (dhcp: systemd name) when the file changed")
    d.add_argument("--output", metavar="PATH", help="write here instead of dhcp: config file / the server's default")
    h = sub.add_parser("hosts", help="the cluster's block of /etc/hosts (between marker lines)")
    h.add_argument("--show", action="store_true", default=argparse.SUPPRESS, help="print the new file; write nothing")
    h.add_argument("--output", metavar="PATH", default=hostsfile.DEFAULT_PATH, help="hosts file (default /etc/hosts)")
    t = sub.add_parser("tftp", help="what the TFTP root serves per client architecture; copy missing iPXE binaries")
    t.add_argument("--show", action="store_true", default=argparse.SUPPRESS, help="list the boot files and which are missing; copy nothing")
    c = sub.add_parser("cache", help="the nginx configuration of a cache host (immutable blobs only)",
                       description=nginx_cache.__doc__.splitlines()[0])
    c.add_argument("--listen", metavar="ADDR:PORT", default=nginx_cache.DEFAULT_LISTEN,
                   help=f"where the cache listens for nodes (default {nginx_cache.DEFAULT_LISTEN})")
    c.add_argument("--origin", metavar="ADDR:PORT", action="append", default=[],
                   help="a wwfast server to fill the cache from; repeat it, the preferred one first "
                        "(default: this settings file's server address and port)")
    c.add_argument("--cache-dir", metavar="DIR", default=nginx_cache.DEFAULT_CACHE_DIR,
                   help=f"cache, temp files, pid and logs (default {nginx_cache.DEFAULT_CACHE_DIR})")
    c.add_argument("--output", metavar="FILE", help="write the file (atomically; creates --cache-dir) "
                                                    "instead of printing it")
    c.add_argument("--user", default="www-data", help="user the nginx workers run as (default www-data)")
    c.add_argument("--max-size", default="100g", help="largest size of the cache on disk (default 100g)")
    c.add_argument("--slice", default="8m", help="size of one cached piece (default 8m)")
    c.set_defaults(func=cmd_configure_cache)
    t = sub.add_parser("tls", help="make (self-signed) or import the HTTPS key and certificate",
                       description=tls.__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  wwfast configure tls                        # self-signed, names from "
                              "the settings and this host\n  wwfast configure tls --import site.crt site.key\n"
                              "then set `warewulf: tls: true` and rebuild the overlays (nodes carry the certificate)\n")
    t.add_argument("--import", dest="import_pair", nargs=2, metavar=("CERT", "KEY"),
                   help="use a site's certificate (PEM, chain allowed) and its unencrypted key")
    t.add_argument("--name", action="append", default=[], metavar="NAME",
                   help="a host name or address the certificate names (repeat; default: the server address "
                        "from the settings, this host's names and localhost)")
    t.add_argument("-f", "--force", action="store_true", help="replace the key and certificate in place")
    t.set_defaults(func=cmd_configure_tls)


def defined_nodes(conf_dir, state_dir):
    """The node file read and checked as the define stage does: {id: records.Node}. A server with no node
    file yet has no nodes (DHCP then serves only its dynamic range, to machines not yet defined)."""
    config = nodefile.read_config(conf_dir)
    if not os.path.exists(config.path):
        _note(f"configure: no node file yet ({config.path}): no node entries")
    resolved = nodes.resolve(config, inventory.image_names(state_dir), inventory.overlay_names(conf_dir))
    return {node_id: records.Node.from_json(node) for node_id, node in resolved.items()}


def _note(line):
    print(line, file=sys.stderr)


def configure_dhcp(args, conf, defined):
    show = args.show
    text, dhcp_plan = dhcp.render(args.conf, conf, defined)
    server = dhcp.server_for(conf)
    path = dhcp.config_path(conf, getattr(args, "output", None))
    for note in dhcp_plan.notes + plan.range_warnings(conf, defined):
        _note(f"dhcp: note: {note}")
    if not conf.dhcp_enabled:
        _note("dhcp: disabled in the settings (dhcp: enabled: false)" + ("" if show else "; nothing written"))
        if not show:
            return 0
    if show:
        sys.stdout.write(text)
        if args.restart or conf.dhcp_restart:
            would = files.Change(path, files.read_current(path), text).changed
            _note(f"dhcp: --show: would run `{' '.join(files.restart_command(dhcp.unit_name(conf)))}`"
                  if would else f"dhcp: --show: {path} would not change; no restart")
        return 0
    change = files.write_if_changed(path, text)
    print("\n".join(change.describe(f"dhcp ({server.name}, {len(dhcp_plan.hosts)} hosts)")))
    if args.restart or conf.dhcp_restart:
        unit = dhcp.unit_name(conf)
        if not change.changed:
            print(f"dhcp: {unit} not restarted (its configuration did not change)")
            return 0
        ok, message = files.restart_service(unit)
        print(f"dhcp: {message}") if ok else _note(f"dhcp: error: {message}")
        return 0 if ok else 1
    if change.changed:
        print(f"dhcp: restart {dhcp.unit_name(conf)} to apply it (--restart, or dhcp: restart: true)")
    return 0


def configure_hosts(args, conf, defined):
    path = getattr(args, "output", None) or hostsfile.DEFAULT_PATH
    current = files.read_current(path)
    text = hostsfile.render(current, defined, conf)
    if args.show:
        sys.stdout.write(text)
        return 0
    change = files.write_if_changed(path, text, backup=True)
    print("\n".join(change.describe("hosts")))
    return 0


def configure_tftp(args, conf):
    lines, _ = tftproot.show(conf) if args.show else tftproot.install(conf)
    print("\n".join(lines))
    return 0


def cmd_configure(args):
    if args.what is None and not args.all:
        raise UsageError("say what to configure: wwfast configure dhcp|hosts|tftp|cache, or wwfast configure --all")
    if args.what is not None and args.all:
        raise UsageError("--all configures everything: give either --all or one service")
    if not os.path.isdir(args.conf):
        # a mistyped --conf would otherwise configure an empty cluster: /etc/hosts without its nodes
        raise ConfigError(args.conf, None, "", "the configuration directory does not exist")
    conf = settings.load(args.conf)
    if args.what == "tftp":
        return configure_tftp(args, conf)
    defined = defined_nodes(args.conf, args.state)
    if args.what == "dhcp":
        return configure_dhcp(args, conf, defined)
    if args.what == "hosts":
        return configure_hosts(args, conf, defined)
    rc = 0
    if conf.dhcp_enabled:
        rc |= configure_dhcp(args, conf, defined)
    else:
        print("dhcp: skipped (dhcp: enabled is false in the settings)")
    rc |= configure_tftp(args, conf)
    rc |= configure_hosts(args, conf, defined)
    return rc


def cmd_configure_cache(args):
    origins = args.origin or [nginx_cache.default_origin(settings.load(args.conf))]
    text = nginx_cache.render(origins, listen=args.listen, cache_dir=args.cache_dir, user=args.user,
                              slice_size=args.slice, max_size=args.max_size, conf_dir=args.conf)
    if not args.output:
        sys.stdout.write(text)
        return 0
    os.makedirs(args.cache_dir, exist_ok=True)
    fsutil.atomic_write(args.output, text.encode())
    print(f"configure cache: wrote {args.output} (origins {', '.join(origins)}; cache in {args.cache_dir}); "
          f"check it with: nginx -t -c {os.path.abspath(args.output)}")
    return 0


def cmd_configure_tls(args):
    if args.import_pair:
        path = tls.import_pair(args.conf, *args.import_pair, force=args.force)
        print(f"configure tls: imported {args.import_pair[0]} as {path}")
    else:
        names = args.name or tls.default_names(settings.load(args.conf))
        path = tls.generate(args.conf, names, force=args.force)
        print(f"configure tls: wrote a self-signed certificate {path} and its key")
    for line in tls.describe(args.conf):
        print(f"  {line}")
    if not settings.load(args.conf).tls:
        print("  (serve uses it once the settings say `warewulf: tls: true`)")
    return 0
