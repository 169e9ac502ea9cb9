"""The `cluster:` block of the settings: scale-out beyond one server (docs/formats.md, docs/deployment.md).

Absent, wwfast is one server with no cache tier and no etcd (the default). `caches` alone gives a static
cache tier; `etcd` makes several servers share the published generation, their membership, the caches'
membership (under leases) and the nodes' boot records. Every error names file, line and field.
"""
import re
import socket
import urllib.parse

from wwfast.define.schema import did_you_mean

KEYS = ("etcd", "etcd prefix", "lease ttl", "server name", "server url", "caches", "cache group tag",
        "transfer timeout", "source rounds", "boot records")
DEFAULTS = {
    "etcd_endpoints": [], "etcd_prefix": "/wwfast/", "lease_ttl": 5, "server_name": "", "server_url": "",
    "caches": [], "cache_group_tag": "cachegroup", "transfer_timeout": 10, "source_rounds": 3,
    "boot_records": True,
}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def http_url(value):
    """'http://host:port' (no path) or ValueError."""
    text = str(value).strip().rstrip("/")
    try:
        u = urllib.parse.urlsplit(text)
        port = u.port
    except ValueError as e:
        raise ValueError(f'bad URL "{value}": {e}') from None
    if u.scheme not in ("http", "https") or not u.hostname or u.path or u.query or u.fragment:
        raise ValueError(f'bad URL "{value}": expected http://HOST:PORT')
    if port is None:
        raise ValueError(f'bad URL "{value}": give the port')
    return text


def _posint(value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f'"{value}" is not a whole number in {low}..{high}')
    return value


def _cache(entry):
    """A cache entry: "URL", "URL GROUP" or {url: URL, group: G, weight: W, name: N}."""
    if isinstance(entry, str):
        parts = entry.split()
        if not 1 <= len(parts) <= 2:
            raise ValueError(f'"{entry}": expected "URL" or "URL GROUP"')
        entry = {"url": parts[0], "group": parts[1] if len(parts) == 2 else ""}
    if not isinstance(entry, dict):
        raise ValueError("a cache is a URL or a mapping with url, group, weight, name")
    unknown = [k for k in entry if k not in ("url", "group", "weight", "name")]
    if unknown:
        raise ValueError(f'unknown key "{unknown[0]}"{did_you_mean(unknown[0], ("url", "group", "weight", "name"))}')
    url = http_url(entry.get("url") or "")
    group = str(entry.get("group") or "")
    name = str(entry.get("name") or urllib.parse.urlsplit(url).netloc)
    weight = entry.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1000:
        raise ValueError(f'weight "{weight}" is not a number in (0, 1000]')
    return {"name": name, "url": url, "group": group, "weight": float(weight)}


def parse(doc, block, values, errors):
    """Validate `cluster:` (a mapping) into `values` (Settings attributes); problems go to `errors`."""
    if block is None:
        return
    if not isinstance(block, dict):
        errors.append(doc.error(("cluster",), "must be a mapping"))
        return
    for key, value in block.items():
        where = ("cluster", key)
        if key not in KEYS:
            errors.append(doc.error(where, f'unknown key "{key}"{did_you_mean(key, KEYS)}'))
            continue
        if value is None:
            continue
        try:
            if key == "etcd":
                items = value if isinstance(value, list) else [value]
                endpoints = []
                for i, item in enumerate(items):
                    try:
                        endpoints.append(http_url(item))
                    except ValueError as e:
                        errors.append(doc.error(where + ((i,) if isinstance(value, list) else ()), str(e)))
                values["etcd_endpoints"] = endpoints
            elif key == "etcd prefix":
                prefix = str(value)
                if not prefix.startswith("/") or " " in prefix:
                    raise ValueError(f'"{prefix}" must start with / and have no spaces')
                values["etcd_prefix"] = prefix if prefix.endswith("/") else prefix + "/"
            elif key == "lease ttl":
                values["lease_ttl"] = _posint(value, 2, 600)
            elif key == "server name":
                if not NAME.match(str(value)):
                    raise ValueError(f'"{value}" is not a name (letters, digits, . _ -)')
                values["server_name"] = str(value)
            elif key == "server url":
                values["server_url"] = http_url(value)
            elif key == "caches":
                if not isinstance(value, list):
                    raise ValueError("must be a list of caches")
                caches = []
                for i, item in enumerate(value):
                    try:
                        caches.append(_cache(item))
                    except ValueError as e:
                        errors.append(doc.error(where + (i,), str(e)))
                names = [c["name"] for c in caches]
                for i, name in enumerate(names):
                    if name in names[:i]:
                        errors.append(doc.error(where + (i,), f'cache "{name}" is listed twice'))
                values["caches"] = caches
            elif key == "cache group tag":
                values["cache_group_tag"] = str(value)
            elif key == "transfer timeout":
                values["transfer_timeout"] = _posint(value, 1, 3600)
            elif key == "source rounds":
                values["source_rounds"] = _posint(value, 1, 100)
            elif key == "boot records":
                if not isinstance(value, bool):
                    raise ValueError(f'"{value}" is not a boolean (true/false)')
                values["boot_records"] = value
        except ValueError as e:
            errors.append(doc.error(where, str(e)))


def server_name(settings):
    return settings.server_name or socket.gethostname().split(".")[0]


def server_url(settings):
    """How nodes and caches reach this server: `server url`, else http://ipaddr:port."""
    if settings.server_url:
        return settings.server_url
    host = settings.address
    return f"http://[{host}]:{settings.http_port}" if ":" in host else f"http://{host}:{settings.http_port}"


def cache_tier(settings):
    """True when nodes fetch kernel, image and system overlays from caches (static or announced in etcd)."""
    return bool(settings.caches or settings.etcd_endpoints)


def scaleout_wanted(settings):
    """True when serve runs a scale-out part: caches listed, or etcd (here, not in wwfast.server.scaleout,
    so a serve without one never imports the etcd client)."""
    return bool(getattr(settings, "caches", None) or getattr(settings, "etcd_endpoints", None))
