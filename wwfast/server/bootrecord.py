"""A node's boot record: every request of its current and its last boot, as plain JSON values.

Kept by the status book (wwfast.server.status) inside each node's status entry, saved with it in
STATE/serve/status.json and answered by /status?node=ID. One boot:

    {"start": 1700000000.1, "end": 1700000012.9 (0 while booting), "generation": "...",
     "requests": [request, ...], "dropped": 0}

One request (HTTP or TFTP, answered or refused):

    {"seq": 17, "stage": "kernel", "file": "<sha256>.kernel", "encoding": "raw", "method": "GET",
     "code": 200, "length": 9000000, "bytes": 9000000, "start": ..., "end": ..., "result": "ok",
     "reason": "", "generation": "...", "client": "10.0.2.15", "protocol": "http"}

`result`: "ok" (every byte of `length` went out; for TFTP every block was acknowledged), "cut short"
(the transfer ended early: `bytes` is what went out, `reason` why, e.g. a TFTP "expired"), "refused"
(`reason` the marker: BAD_ASSET, BAD_PORT, NOT_TLS, NOT_FOUND), or null while in flight. `bytes` is
what the transport actually sent (HTTP: handed to the kernel; TFTP: acknowledged by the client).

Requests are kept in the order they began (with `serve --workers N` an event may reach the book after
a later one's). Bounded: at most CAP requests per boot, the first CAP-1 and the latest; once the boot has ended
(`booted` = how many requests it took, up to and including the whole runtime overlay), only the
latest AFTER requests after it are kept (the node agent refreshing its runtime overlay for months
costs AFTER entries). `dropped` counts the requests left out.
"""

CAP = 64
AFTER = 4
ENCODINGS = ((".cpio.zst", "zst"), (".cpio.gz", "gz"))
RESULTS = ("ok", "cut short", "refused", None)
# An event may reach the book after a later one's (another worker's channel was full): one that began at
# most this many seconds before a request already recorded is put before it; further back is the clock
# stepping back, and arrival order stands.
REORDER_SECONDS = 10.0


def began_before(start, other):
    """A request that began at `start` goes before one recorded as beginning at `other`."""
    return 0 < other - start <= REORDER_SECONDS


def encoding_of(file_name):
    """The content encoding a store file name says ("zst", "gz"; "raw" for kernels, scripts, ...)."""
    for suffix, name in ENCODINGS:
        if file_name.endswith(suffix):
            return name
    return "raw"


def new_boot(start, generation):
    return {"start": start, "end": 0, "generation": generation, "requests": [], "booted": 0, "dropped": 0}


def add(boot, request):
    """Append `request` to `boot`: the first CAP-1 requests and the latest, and after the boot's end
    only the latest AFTER. Returns whether it is now the boot's latest request (what a node's status
    shows), not one that arrived after a later one's."""
    requests = boot["requests"]
    if len(requests) >= CAP:
        latest = not began_before(request["start"], seconds(requests[-1].get("start")))
        requests[-1] = request
        boot["dropped"] += 1
        return latest
    if boot["booted"] and len(requests) - boot["booted"] >= AFTER:
        del requests[boot["booted"]]
        boot["dropped"] += 1
    # In the order they began: another worker's event may arrive after a later one's.
    at = len(requests)
    while at and began_before(request["start"], seconds(requests[at - 1].get("start"))):
        at -= 1
    requests.insert(at, request)
    if boot["booted"] and at < boot["booted"]:
        boot["booted"] += 1       # it came before the request that ended the boot
    return at == len(requests) - 1


def move_after(old, new, start):
    """Move the requests of the unfinished boot `old` that began after `start` into `new` (a script
    reported after the requests it led to, by another worker of `serve --workers N`)."""
    later = [r for r in old["requests"] if began_before(start, seconds(r.get("start")))]
    if later:
        moved = {id(r) for r in later}
        old["requests"] = [r for r in old["requests"] if id(r) not in moved]
        for request in later:
            add(new, request)


def finish(boot, at, request):
    """The boot ended at `at` with `request` (its whole runtime overlay): later requests are refreshes."""
    boot["end"] = at
    requests = boot["requests"]
    boot["booted"] = next((i + 1 for i, r in enumerate(requests) if r is request), len(requests))


def find(boot, seq):
    """The request numbered `seq` in `boot` (searched from the newest), or None."""
    if boot:
        for request in reversed(boot["requests"]):
            if request.get("seq") == seq:
                return request
    return None


def loaded(boot):
    """A boot read back from the saved file, checked; None when it is not one. Requests still in
    flight when the server stopped are marked cut short (their end was never seen)."""
    if not isinstance(boot, dict) or not isinstance(boot.get("requests"), list):
        return None
    out = new_boot(seconds(boot.get("start")), str(boot.get("generation", "")))
    out["end"] = seconds(boot.get("end"))
    out["dropped"] = int(seconds(boot.get("dropped")))

    for request in boot["requests"][:CAP]:
        if not isinstance(request, dict):
            continue
        request = dict(request)
        if request.get("result") not in RESULTS:
            request["result"] = "cut short"
        if request.get("result") is None:
            request["result"], request["reason"] = "cut short", "server stopped"
        out["requests"].append(request)
    out["booted"] = min(int(seconds(boot.get("booted"))), len(out["requests"]))
    return out


def seconds(value):
    """`value` if it is a number (a time, a count), else 0: a damaged saved file is never trusted."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else 0
