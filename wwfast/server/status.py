"""Per-node provisioning status, kept across restarts in STATE/serve/status.json.

Per node: the last stage and file sent (or a marker such as BAD_ASSET), the
client address, when it was last seen, and when its current boot started (an
/ipxe request) and ended (its first complete /runtime after that); and its boot
records (wwfast.server.bootrecord): every request of the current boot ("boot")
and of the one before ("last boot"). Warewulf keeps this only in memory; we save
it atomically, at most once per `debounce` seconds, from a worker thread so a
slow disk never stalls the loop. Only nodes that changed are serialised again (each node's JSON
is kept), and a save that took long spaces the next one out (at most ~10% of the time saving),
so a large cluster whose agents refresh all day costs what changes, not what is kept.
"""
import json
import logging
import os
import time

from wwfast import fsutil, layout
from wwfast.server import bootrecord

log = logging.getLogger("wwfast.serve")

FORMAT = 1
FIELDS = ("node name", "stage", "sent", "ipaddr", "last seen", "boot start", "boot end")
BOOTS = ("boot", "last boot")       # boot records: the current one and the one before
TIMES = ("last seen", "boot start", "boot end")


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


def summary(rec):
    """A node's entry without its boot records (what /status lists for every node)."""
    return {k: v for k, v in rec.items() if k not in BOOTS}


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
                for key in TIMES:            # compared with new events' times: numbers or 0
                    self.nodes[node_id][key] = bootrecord.seconds(self.nodes[node_id][key])
                for key in BOOTS:
                    self.nodes[node_id][key] = bootrecord.loaded(rec.get(key))
        self._loop = None
        self._timer = None
        self._saving = None
        self._json = {}                    # node id -> '"id":{entry}' as saved (compact JSON)
        self._changed = set(self.nodes)    # nodes whose saved JSON is out of date
        self._save_cost = 0.0              # seconds the last save took (serialising + writing)
        self._saved_pieces()               # serialise what was loaded now, before serving

    def _record(self, node_id):
        rec = self.nodes.get(node_id)
        if rec is None:
            rec = self.nodes[node_id] = blank(node_id)
        return rec

    # -- events (plain values: a worker process can forward them) ---------------------------
    def began(self, node_id, request):
        """A request of `node_id` is being answered: `request` is a boot record request (see
        wwfast.server.bootrecord) with result None. A script, or a kernel outside a boot, starts a boot.

        With several workers a node's events can arrive out of order (its system overlay went out on
        one worker, its runtime overlay on another, whose event came first): each event is placed by
        when it happened, not when it arrived. The stage and file shown are the latest request's; a
        script that began before the open boot's first request is that boot's start, not a new boot,
        and a new boot takes what an unfinished one was given after its script began."""
        now = request["start"]
        rec = self._record(node_id)
        boot_open = rec["boot start"] and not rec["boot end"]
        if request["stage"] == "ipxe" and boot_open and bootrecord.began_before(now, rec["boot start"]):
            if rec.get("boot") and rec["boot"]["start"] == rec["boot start"]:
                rec["boot"]["start"] = now
            rec["boot start"] = now
        elif request["stage"] == "ipxe" or (request["stage"] == "kernel" and not boot_open):
            rec["boot start"], rec["boot end"] = now, 0
            rec["last boot"], rec["boot"] = rec.get("boot"), bootrecord.new_boot(now, request["generation"])
            if boot_open and rec["last boot"]:     # what the unfinished boot got after this script is this boot's
                bootrecord.move_after(rec["last boot"], rec["boot"], now)
        self._show(rec, request, request["file"])
        self._dirty(node_id)

    def refused(self, node_id, request):
        """A request of `node_id` was refused: `request["reason"]` (BAD_ASSET, ...) shows as sent."""
        rec = self._record(node_id)
        self._show(rec, request, request["reason"])
        self._dirty(node_id)

    def _show(self, rec, request, sent):
        """Add `request` to the node's boot record; show it as the node's stage and file sent when it is
        the boot's latest (not one that arrived after a later one's)."""
        if self._add(rec, request):
            rec.update({"stage": request["stage"], "sent": sent, "ipaddr": request["client"]})
        self._seen(rec, request["start"])

    @staticmethod
    def _seen(rec, at):
        if not bootrecord.began_before(at, rec["last seen"]):
            rec["last seen"] = at

    def ended(self, node_id, seq, at, sent, complete, reason="", finishes=False):
        """Request `seq` of `node_id` ended at `at` with `sent` bytes out, `complete` or cut short
        (`reason`). `finishes`: it was a whole runtime overlay, which ends an open boot. Returns the
        boot duration when it did."""
        rec = self._record(node_id)
        self._seen(rec, at)
        request = bootrecord.find(rec.get("boot"), seq) or bootrecord.find(rec.get("last boot"), seq)
        if request is not None:
            request.update({"end": at, "bytes": sent, "result": "ok" if complete else "cut short",
                            "reason": "" if complete else reason})
        duration = None
        if finishes and rec["boot start"] and not rec["boot end"]:
            rec["boot end"] = at
            duration = at - rec["boot start"]
            if rec.get("boot") and rec["boot"]["start"] == rec["boot start"]:
                bootrecord.finish(rec["boot"], at, request)
        self._dirty(node_id)
        return duration

    def _add(self, rec, request):
        if rec.get("boot") is None:     # requests before any boot start was seen (e.g. an agent refresh)
            rec["boot"] = bootrecord.new_boot(0, request["generation"])
        return bootrecord.add(rec["boot"], request)

    def record(self, node_id):
        """The node's whole entry, boot records included (copied), or None when never seen."""
        rec = self.nodes.get(node_id)
        return json.loads(json.dumps(rec)) if rec is not None else None

    def snapshot(self, node_ids=()):
        """Every known node (those in the manifest included, even if never seen), without boot records."""
        out = {node_id: summary(rec) for node_id, rec in self.nodes.items()}
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

    def _dirty(self, node_id):
        if node_id is not None:
            self._changed.add(node_id)
        if self._loop is not None and self._timer is None:
            self._timer = self._loop.call_later(max(self.debounce, 10 * self._save_cost), self._flush)

    def _flush(self):
        self._timer = None
        if self._saving is not None and not self._saving.done():
            self._dirty(None)     # a save is still running; try again later
            return
        began = time.monotonic()
        pieces = self._saved_pieces()
        self._saving = self._loop.run_in_executor(None, self._write, pieces, time.monotonic() - began)

    def _saved_pieces(self):
        """The whole book, boot records included, as the saved file's pieces: the changed nodes serialised
        again (in the loop, so no copy is needed), the others as they were; joined by the saving thread."""
        for node_id in self._changed:
            self._json[node_id] = (json.dumps(node_id) + ":"
                                   + json.dumps(self.nodes[node_id], sort_keys=True, separators=(",", ":")))
        self._changed.clear()
        return [self._json[n] for n in sorted(self._json)]

    def _write(self, pieces, cost=0.0):
        began = time.monotonic()
        data = f'{{"format":{FORMAT},"nodes":{{\n' + ",\n".join(pieces) + "}}\n"
        try:
            fsutil.atomic_write(self.path, data)
        except OSError as e:
            log.error("cannot save node status to %s: %s", self.path, e)
        self._save_cost = cost + time.monotonic() - began

    async def close(self):
        """Cancel the pending save and write the final state now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._saving is not None:
            await self._saving
        self._write(self._saved_pieces())
