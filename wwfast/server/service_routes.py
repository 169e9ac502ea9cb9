"""The service routes beside the node routes: /status (boot records, JSON), /metrics (Prometheus text)
and /healthz (what a load balancer asks), registered on the Provisioner. They read the boot ledger and
the current manifest; they send no store file.
"""
import json

from wwfast.server.replies import Reply, json_reply, text_reply
from wwfast.server.routing import no_such_route, route


@route("status")
def status_route(provisioner, req):
    if req.args:
        return no_such_route(req)
    node_id = req.query.get("node")
    if node_id is None and provisioner.scaleout is not None:      # every server's boot records too (etcd)
        doc = provisioner.scaleout.merge_status(provisioner.ledger.status_document(provisioner.catalog))
        return json_reply((json.dumps(doc, sort_keys=True, indent=1) + "\n").encode())
    if node_id is None:
        return json_reply(provisioner.ledger.status_json(provisioner.catalog))
    doc = provisioner.ledger.node_document(provisioner.catalog, node_id)
    if doc is None:
        return text_reply(404, f"no node {node_id!r}: not in the published manifest and never seen")
    return json_reply((json.dumps(doc, sort_keys=True, indent=1) + "\n").encode())


@route("metrics")
def metrics_route(provisioner, req):
    if req.args:
        return no_such_route(req)
    body = provisioner.ledger.metrics_text(provisioner.catalog).encode()
    return Reply(200, body, [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])


@route("healthz")
def healthz_route(provisioner, req):
    if req.args:
        return no_such_route(req)
    if not provisioner.watcher.loaded:
        return text_reply(503, "no manifest published yet")
    worker = "" if provisioner.worker is None else f" worker={provisioner.worker}"
    return text_reply(200, f"ok generation={provisioner.catalog.generation}{worker}")
