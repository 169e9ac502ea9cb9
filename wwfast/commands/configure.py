"""`wwfast configure dhcp|hosts|tftp` and `wwfast configure --all`: the services around provisioning.

Each reads the node file (checked as the define stage checks it) and the settings, so one command takes a
changed node to the service. Files are written atomically and only when their content changes, and the
command says what changed; `--show` prints what would be written and writes nothing.
"""
import argparse
import sys

from wwfast.configure import dhcp, files, hostsfile, plan, tftproot
from wwfast.define import nodes, settings
from wwfast.errors import UsageError


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
        raise UsageError("say what to configure: wwfast configure dhcp|hosts|tftp, or wwfast configure --all")
    if args.what is not None and args.all:
        raise UsageError("--all configures everything: give either --all or one service")
    conf = settings.load(args.conf)
    if args.what == "tftp":
        return configure_tftp(args, conf)
    defined = nodes.define(args.conf, args.state)
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
