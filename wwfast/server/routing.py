"""The HTTP route table and the request the routes see: registration, parsing a request target into
checked path segments, and the helpers every route shares. No provisioning rules here (those are
wwfast.server.provision and the route modules that register on it).

Adding an HTTP route: write a function taking the Provisioner and a `ProvisionRequest` and returning a
Reply (or a Provisioner method), and decorate it with `@route("first-path-segment")`. `req.args` holds
the path segments after the first (already unquoted and checked: no '.', '..', slashes or NULs),
`req.query` the query parameters (first value of each), `req.label` the metrics label (the route name
unless the handler sets another). Node routes resolve the node with `provisioner.requested_mac(req)`.
"""
import urllib.parse

import httptools

from wwfast.server.replies import text_reply

ROUTES = {}          # first path segment -> handler(provisioner, req)


def route(*names):
    """Register the decorated handler as the one of /<name>/... for each name."""
    def register(handler):
        for name in names:
            ROUTES[name] = handler
        return handler
    return register


class ProvisionRequest:
    """One parsed HTTP request as the routes see it."""
    __slots__ = ("method", "path", "name", "args", "query", "headers", "peer", "label", "tls")

    def __init__(self, method, path, name, args, query, headers, peer):
        self.method, self.path, self.name, self.args = method, path, name, args
        self.query, self.headers, self.peer = query, headers, peer
        self.label = name
        self.tls = False


class Refusal(Exception):
    """A route's early answer (an error reply), raised from the helpers the routes share."""

    def __init__(self, reply):
        super().__init__(reply.code)
        self.reply = reply


def parse_request(method, url, headers, peer):
    """A ProvisionRequest, or the 400 Reply for a target we refuse to interpret."""
    try:
        parsed = httptools.parse_url(url)
    except httptools.HttpParserInvalidURLError:
        return text_reply(400, "malformed URL")
    path = (parsed.path or b"/").decode("latin-1")
    query = urllib.parse.parse_qs((parsed.query or b"").decode("latin-1"), keep_blank_values=True)
    segments = []
    for raw in path.split("/"):
        if not raw:
            continue             # collapse '//' (shim asks for .../efiboot//grub.efi)
        seg = urllib.parse.unquote(raw, errors="strict") if "%" in raw else raw
        if seg in (".", "..") or "/" in seg or "\\" in seg or "\0" in seg:
            return text_reply(400, "path segments may not be '.', '..' or contain slashes")
        segments.append(seg)
    name = segments[0] if segments else ""
    return ProvisionRequest(method, path, name, segments[1:], {k: v[0] for k, v in query.items()},
                            headers, peer)


def recorded(req, catalog, code=None):
    """What a boot record keeps of an HTTP request besides node, stage, file and client."""
    out = {"generation": catalog.generation if catalog is not None else "",
           "protocol": "https" if req.tls else "http", "method": req.method}
    if code is not None:
        out["code"] = code
    return out


def no_such_route(req):
    req.label = "other"
    return text_reply(404, f"no such route {req.path}")
