"""Per-node provisioning status, kept across restarts in STATE/serve/status.json.

Per node: the last stage and file sent (or a marker such as BAD_ASSET), the
client address, when it was last seen, and when its current boot started (an
/ipxe request) and ended (its first complete /runtime after that). Warewulf
keeps this only in memory; we save it atomically, at most once per
`debounce` seconds, from a worker thread so a slow disk never stalls the loop.
"""
import json
import logging
import os
import time

from wwfast import fsutil, layout

log = logging.getLogger("wwfast.serve")

FORMAT = 1
FIELDS = ("node name", "stage", "sent", "ipaddr", "last seen", "boot start", "boot end")


def status_path(state_dir):
    return layout.status_json(state_dir)


def read_status(state_dir, set_aside_damaged=False):
    """The saved status document, or an empty one (never raises on a missing/bad file).

    With `set_aside_damaged` (the server, which will overwrite the file) a damaged file is
    renamed to status.json.damaged rather than lost.
    """
    path = status_path(state_dir)
    problem = None
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
        if isinstance(doc, dict) and isinstance(doc.get("nodes"), dict):
            return doc
        problem = "not a status document"
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        problem = str(e)
    if problem:
        if set_aside_damaged:
            os.replace(path, path + ".damaged")
            log.warning("%s: %s; kept as %s.damaged, starting empty", path, problem, path)
        else:
            log.warning("%s: %s", path, problem)
    return {"format": FORMAT, "nodes": {}}


def blank(node_id):
    return {"node name": node_id, "stage": "", "sent": "", "ipaddr": "", "last seen": 0,
            "boot start": 0, "boot end": 0}


class StatusBook:
    def __init__(self, state_dir, debounce=1.0, clock=time.time):
        self.state_dir = state_dir
        self.path = status_path(state_dir)
        self.debounce = debounce
        self.clock = clock
        self.nodes = {}
        for node_id, rec in read_status(state_dir, set_aside_damaged=True)["nodes"].items():
            if isinstance(rec, dict):
                self.nodes[node_id] = {**blank(node_id), **{k: rec[k] for k in FIELDS if k in rec}}
        self._loop = None
        self._timer = None
        self._saving = None
        self.on_change = None         # (node_id, record copy) on each stage change or boot end (etcd mirror)

    def _record(self, node_id):
        rec = self.nodes.get(node_id)
        if rec is None:
            rec = self.nodes[node_id] = blank(node_id)
        return rec

    def requested(self, node_id, stage, sent, ipaddr, ok=True):
        """A node asked for `stage`; `sent` is the file name, or an error marker when not `ok`."""
        now = self.clock()
        rec = self._record(node_id)
        boot_open = rec["boot start"] and not rec["boot end"]
        if ok and (stage == "ipxe" or (stage == "kernel" and not boot_open)):
            rec["boot start"], rec["boot end"] = now, 0
        changed = rec["stage"] != stage or rec["sent"] != sent or stage == "ipxe"     # a script: a new boot
        rec.update({"stage": stage, "sent": sent, "ipaddr": ipaddr, "last seen": now})
        self._dirty()
        if changed and self.on_change is not None:
            self.on_change(node_id, dict(rec))

    def completed(self, node_id, stage):
        """A file body was sent in full; returns the boot duration when this ends a boot."""
        now = self.clock()
        rec = self._record(node_id)
        rec["last seen"] = now
        duration = None
        if stage == "runtime" and rec["boot start"] and not rec["boot end"]:
            rec["boot end"] = now
            duration = now - rec["boot start"]
            if self.on_change is not None:
                self.on_change(node_id, dict(rec))
        self._dirty()
        return duration

    def snapshot(self, node_ids=()):
        """Every known node (those in the manifest included, even if never seen)."""
        out = {node_id: dict(rec) for node_id, rec in self.nodes.items()}
        for node_id in node_ids:
            out.setdefault(node_id, blank(node_id))
        return {"format": FORMAT, "nodes": dict(sorted(out.items()))}

    def by_stage(self, node_ids=()):
        counts = {}
        for rec in self.snapshot(node_ids)["nodes"].values():
            stage = rec["stage"] or "none"
            counts[stage] = counts.get(stage, 0) + 1
        return counts

    # -- saving ---------------------------------------------------------------------------
    def attach(self, loop):
        self._loop = loop

    def _dirty(self):
        if self._loop is not None and self._timer is None:
            self._timer = self._loop.call_later(self.debounce, self._flush)

    def _flush(self):
        self._timer = None
        if self._saving is not None and not self._saving.done():
            self._dirty()     # a save is still running; try again later
            return
        data = json.dumps(self.snapshot(), sort_keys=True, indent=1) + "\n"
        self._saving = self._loop.run_in_executor(None, self._write, data)

    def _write(self, data):
        try:
            fsutil.atomic_write(self.path, data)
        except OSError as e:
            log.error("cannot save node status to %s: %s", self.path, e)

    async def close(self):
        """Cancel the pending save and write the final state now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._saving is not None:
            await self._saving
        self._write(json.dumps(self.snapshot(), sort_keys=True, indent=1) + "\n")
