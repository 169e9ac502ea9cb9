"""serve stage: answer nodes over HTTP (and TFTP) from the published manifest; never builds.

python -m stages.serve --conf DIR --state DIR [--bind ADDR] [--http-port N] [--tftp-port N] [--tftp-root DIR]
Flags override the settings file. Runs in the foreground, logs to stderr, stops on SIGTERM/SIGINT.
"""
import argparse
import sys

from wwfast.define import settings
from wwfast.errors import ConfigError, UsageError
from wwfast.server import service
from wwfast.dirs import add_dir_arguments


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m stages.serve", description=__doc__.splitlines()[0])
    add_dir_arguments(parser)
    service.add_arguments(parser)
    args = parser.parse_args(argv)
    service.configure_logging(args.verbose, args.quiet)
    try:
        conf = settings.load(args.conf)
    except ConfigError as e:
        print(f"serve: {e}", file=sys.stderr)
        return 2
    try:
        return service.run(service.ServeOptions.from_settings(conf, args.state, args))
    except UsageError as e:           # TLS on without a key and certificate
        print(f"serve: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
