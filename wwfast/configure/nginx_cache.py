"""`wwfast configure cache`: the nginx configuration of a cache host (docs/deployment.md).

A complete file for `nginx -c`: proxy_cache with the slice module and proxy_cache_lock in front of the
wwfast servers (the origins), for immutable content-addressed blobs only. Rendered from the built-in
template wwfast/data/nginx/cache.conf.j2 (a site copy in CONF/nginx/cache.conf.j2 shadows it).
"""
import ipaddress
import pathlib
import re

import jinja2

from wwfast.errors import UsageError

BUILTIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "data" / "nginx"
TEMPLATE = "cache.conf.j2"
DEFAULT_LISTEN = "0.0.0.0:9874"
DEFAULT_CACHE_DIR = "/var/cache/wwfast-nginx"
SIZE = re.compile(r"^[0-9]+[kmgKMG]?$")


def parse_endpoint(text, what):
    """'ADDR:PORT' or '[V6]:PORT' -> nginx's spelling of it; UsageError naming `what` otherwise."""
    text = str(text).strip()
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:([0-9]+)", text) or re.fullmatch(r"([^\[\]:/\s]+):([0-9]+)", text)
    if not m:
        raise UsageError(f"{what}: {text!r} is not ADDR:PORT")
    host, port = m.group(1), int(m.group(2))
    if not 1 <= port <= 65535:
        raise UsageError(f"{what}: port {port} is out of range 1..65535")
    try:
        addr = ipaddress.ip_address(host)
        host = f"[{addr}]" if addr.version == 6 else str(addr)
    except ValueError:
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
            raise UsageError(f"{what}: {host!r} is neither an IP address nor a host name") from None
    return f"{host}:{port}"


def default_origin(settings):
    host = settings.address
    return f"[{host}]:{settings.http_port}" if ":" in host else f"{host}:{settings.http_port}"


def render(origins, listen=DEFAULT_LISTEN, cache_dir=DEFAULT_CACHE_DIR, user="www-data", workers="auto",
           slice_size="8m", max_size="100g", keys_zone_mb=64, reuseport=False, conf_dir=None):
    """The nginx.conf text. `origins`: ADDR:PORT of the wwfast servers, the preferred one first."""
    if not origins:
        raise UsageError("give at least one --origin ADDR:PORT (a wwfast server)")
    origins = [parse_endpoint(o, "--origin") for o in origins]
    if len(set(origins)) != len(origins):
        raise UsageError("--origin: the same server is listed twice")
    cache_dir = str(cache_dir)
    if not cache_dir.startswith("/") or any(c in cache_dir for c in ' ;{}"\'\n'):
        raise UsageError(f"--cache-dir: {cache_dir!r} must be an absolute path without spaces or ;{{}}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(user)):
        raise UsageError(f"--user: {user!r} is not a user name")
    for value, what in ((slice_size, "--slice"), (max_size, "--max-size")):
        if not SIZE.match(str(value)):
            raise UsageError(f"{what}: {value!r} is not a size such as 8m or 100g")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_search_path(conf_dir)), keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.get_template(TEMPLATE).render(
        origins=origins, listen=parse_endpoint(listen, "--listen"), cache_dir=cache_dir.rstrip("/") or "/",
        user=user, workers=workers, slice=slice_size, max_size=max_size, keys_zone_mb=int(keys_zone_mb),
        reuseport=reuseport)


def _search_path(conf_dir):
    site = pathlib.Path(conf_dir) / "nginx" if conf_dir else None
    return [str(p) for p in (site, BUILTIN_DIR) if p is not None and p.is_dir()]
