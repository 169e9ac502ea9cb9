"""The servers' own view of a storm, compared node for node with what the simulated nodes did.

wwfast: `GET /status` (every node's last stage, file sent, client address, boot start and end) and,
where serve keeps boot records, `GET /status?node=ID` (each request of the node's current boot:
stage, file, bytes, times, result, client, protocol). The classic stack: nginx's access log.
A node agrees when every fact the server recorded matches the client's record of the same boot:
same address, same files with the same byte counts, and every server timestamp inside the
client's interval for that request (causality: the server stamps a request after the node sent
it and before the node read its last byte), within `SLACK` seconds of clock granularity.
"""
import json
import os
import subprocess
import sys
import urllib.parse

SLACK = 0.005
# wwfast stamps a transfer's end when its last send began, so no node can have read the last byte
# before it. nginx logs ($msec, millisecond resolution) after the response is sent: the node may read
# those bytes before nginx gets the CPU back (on a loaded machine, tens of ms later).
NGINX_END_SLACK = 0.25
FETCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fetch_status.py")
# Field names of a boot record request (docs/formats.md, "Node status and boot records")
RECORD = {"stage": "stage", "file": "file", "bytes": "bytes", "start": "start", "end": "end",
          "result": "result", "client": "client", "protocol": "protocol"}


def fetch_wwfast(topo, ns, address, port, node_ids, out_path):
    """/status and, per node, /status?node=ID, fetched inside namespace `ns` over one connection."""
    ids = out_path + ".ids"
    with open(ids, "w") as f:
        f.write("\n".join(node_ids))
    subprocess.run(topo.exec_args(ns) + [sys.executable, FETCHER, f"{address}:{port}", ids, out_path], check=True)
    os.unlink(ids)
    with open(out_path) as f:
        return json.load(f)


def _ok_attempts(attempts):
    """The node's successful requests of its last boot (from the script on), in order."""
    ok = [a for a in attempts if a.result == "ok"]
    starts = [i for i, a in enumerate(ok) if a.label == "ipxe"]
    return ok[starts[-1]:] if starts else ok


def compare_wwfast(nodes, by_node, fetched):
    """`nodes`: [(index, node id, address, steps, refs)]. Returns a summary dict with disagreements."""
    status = fetched["status"].get("nodes", {})
    records = fetched.get("records", {})
    disagree, checked_records = [], 0
    for index, node_id, address, steps, paths in nodes:
        attempts = by_node.get(index, [])
        problems = []
        ok = _ok_attempts(attempts)
        rec = status.get(node_id)
        booted = bool(attempts) and attempts[-1].result == "ok" and attempts[-1].label == steps[-1].label
        if rec is None:
            problems.append("no status record")
        elif booted:
            last, script = ok[-1], ok[0]
            if rec.get("ipaddr") != address:
                problems.append(f"client address {rec.get('ipaddr')} != {address}")
            if rec.get("stage") != "runtime" or rec.get("sent") != os.path.basename(paths[steps[-1].ref]):
                problems.append(f"last sent {rec.get('stage')}/{rec.get('sent')}, node fetched runtime last")
            if not script.start - SLACK <= rec.get("boot start", 0) <= script.end + SLACK:
                problems.append("boot start outside the node's script request")
            if not last.start - SLACK <= rec.get("boot end", 0) <= last.end + SLACK:
                problems.append(f"boot end {rec.get('boot end', 0) - last.end:+.3f} s after the node's runtime "
                                "overlay request ended")
        elif rec.get("boot end") and attempts and rec["boot end"] >= attempts[0].start:
            problems.append("server says booted, the node did not finish")
        node_records = records.get(node_id)
        if node_records is not None and booted:
            checked_records += 1
            problems += compare_records(node_records, ok, address, steps, paths)
        if problems:
            disagree.append({"node": node_id, "problems": problems})
    return {"nodes": len(nodes), "agree": len(nodes) - len(disagree), "disagree": disagree[:20],
            "disagreeing": len(disagree), "records_compared": checked_records,
            "source": "/status + /status?node=ID boot records" if checked_records else "/status"}


def compare_records(requests, ok, address, steps, paths):
    """The boot record's requests against the node's own successful HTTP requests of that boot."""
    problems = []
    http = [r for r in requests if r.get(RECORD["protocol"], "http") == "http"
            and r.get(RECORD["result"]) in ("ok", "complete", 200)]
    mine = [a for a in ok if a.label != "nbp"]
    if len(http) != len(mine):
        return [f"{len(http)} HTTP records, the node made {len(mine)} requests"]
    label_step = {s.label: s for s in steps}
    for rec, att in zip(sorted(http, key=lambda r: r.get(RECORD["start"], 0)), mine):
        want_file = os.path.basename(paths[label_step[att.label].ref])
        if rec.get(RECORD["file"]) != want_file or rec.get(RECORD["bytes"]) != att.bytes:
            problems.append(f"{att.label}: record {rec.get(RECORD['file'])}/{rec.get(RECORD['bytes'])} B, "
                            f"node got {want_file}/{att.bytes} B")
        if rec.get(RECORD["client"]) not in (address, f"{address}:{att.srcport}"):
            problems.append(f"{att.label}: record client {rec.get(RECORD['client'])}")
        for key in ("start", "end"):
            t = rec.get(RECORD[key])
            if t is not None and not att.start - SLACK <= t <= att.end + SLACK:
                problems.append(f"{att.label}: record {key} outside the node's request")
    return problems


def compare_nginx(nodes, by_node, log_lines):
    """nginx access log lines ($remote_addr $remote_port $msec ... $status $bytes $uri) per node."""
    seen = {}
    for line in log_lines:
        f = line.split()
        if len(f) < 7:
            continue
        path = urllib.parse.urlsplit(f[6]).path
        seen.setdefault((f[0], int(f[1]), path, int(f[4]), int(f[5])), []).append(float(f[2]))
    disagree = []
    for index, node_id, address, steps, paths in nodes:
        problems = []
        label_step = {s.label: s for s in steps}
        for att in _ok_attempts(by_node.get(index, [])):
            if att.label == "nbp":
                continue
            path = urllib.parse.urlsplit(label_step[att.label].args[1]).path
            times = seen.get((address, att.srcport, path, 200, att.bytes), [])
            hit = next((t for t in times if att.start - SLACK <= t <= att.end + NGINX_END_SLACK), None)
            if hit is None:
                problems.append(f"{att.label}: no matching access log line")
            else:
                times.remove(hit)
        if problems:
            disagree.append({"node": node_id, "problems": problems})
    return {"nodes": len(nodes), "agree": len(nodes) - len(disagree), "disagree": disagree[:20],
            "disagreeing": len(disagree), "source": "nginx access log (HTTP only; in.tftpd logs no transfers)"}
