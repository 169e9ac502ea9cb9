"""`wwfast serve`: the serve stage in the foreground (HTTP + TFTP), same flags as `python -m stages.serve`."""
from wwfast.define import settings
from wwfast.server import service


def register(subparsers):
    p = subparsers.add_parser("serve", help="serve the published manifest to nodes over HTTP and TFTP (foreground)")
    service.add_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args):
    service.configure_logging(args.verbose, args.quiet)
    conf = settings.load(args.conf)          # ConfigError -> message with file, line, field (cli.main)
    return service.run(service.ServeOptions.from_settings(conf, args.state, args))
