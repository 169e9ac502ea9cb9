"""`wwfast configure SERVICE`: configuration files for the services around provisioning.

`wwfast configure cache`: the nginx configuration of a cache host (wwfast.configure.nginx_cache).
"""
import os
import sys

from wwfast import fsutil
from wwfast.configure import nginx_cache
from wwfast.define import settings
from wwfast.errors import UsageError


def register(subparsers):
    p = subparsers.add_parser("configure", help="write configuration files for the services around provisioning",
                              description=__doc__.splitlines()[0])
    p.set_defaults(func=cmd_configure, what=None)
    sub = p.add_subparsers(dest="what", metavar="SERVICE")
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


def cmd_configure(args):
    raise UsageError("say what to configure: wwfast configure cache")


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
