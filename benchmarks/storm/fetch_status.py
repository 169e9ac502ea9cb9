"""Fetch wwfast's /status and every node's /status?node=ID over one keep-alive connection.

Run inside the server's network namespace by views.py:
    python fetch_status.py HOST:PORT IDS_FILE OUT_JSON
OUT_JSON: {"status": <the /status document>, "records": {node id: [request, ...]}}; "records" is
empty when serve does not answer /status?node=ID with a node's boot record.
"""
import http.client
import json
import sys


def get(conn, path):
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    return resp.status, body


def requests_of(doc):
    """The requests of a node's current boot in a /status?node=ID answer (None: not a boot record)."""
    if not isinstance(doc, dict) or "nodes" in doc:
        return None
    for key in ("current", "boot", "current boot"):
        boot = doc.get(key)
        if isinstance(boot, dict) and isinstance(boot.get("requests"), list):
            return boot["requests"]
    if isinstance(doc.get("requests"), list):
        return doc["requests"]
    return None


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    ids = open(sys.argv[2]).read().split()
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    code, body = get(conn, "/status")
    if code != 200:
        sys.exit(f"/status: HTTP {code}")
    out = {"status": json.loads(body), "records": {}}
    for node_id in ids:
        code, body = get(conn, f"/status?node={node_id}")
        requests = requests_of(json.loads(body)) if code == 200 else None
        if requests is None:
            break
        out["records"][node_id] = requests
    with open(sys.argv[3], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
