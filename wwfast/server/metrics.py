"""Counters for /metrics, rendered in the Prometheus text exposition format (version 0.0.4).

Plain dicts updated from the event loop thread: no locks, no client library.
"""
import bisect

# Boot durations (first /ipxe to a complete /runtime) span seconds to many minutes.
BOOT_BUCKETS = (5, 10, 20, 30, 60, 120, 300, 600, 1800)


def _labels(**labels):
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _escape(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _counter(name, help_text, counts, *label_names):
    """A counter's HELP, TYPE and one line per key of `counts` (a key: one label value, or a tuple of them)."""
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
    for key, n in sorted(counts.items()):
        values = key if isinstance(key, tuple) else (key,)
        lines.append(f"{name}{_labels(**dict(zip(label_names, values)))} {n}")
    return lines


class Histogram:
    def __init__(self, buckets):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)   # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value):
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name):
        total = 0
        for bound, n in zip(self.buckets, self.counts):
            total += n
            yield f'{name}_bucket{{le="{bound}"}} {total}'
        yield f'{name}_bucket{{le="+Inf"}} {self.count}'
        yield f"{name}_sum {self.sum:.3f}"
        yield f"{name}_count {self.count}"


# the TFTP core's stats() counters /metrics shows ("active" is a gauge, left out)
TFTP_CORE_EVENTS = ("started", "completed", "expired", "aborted", "data_sent", "retransmits",
                    "duplicate_requests", "first_resends", "duplicate_acks", "dupack_resends", "wrong_tid",
                    "malformed", "send_errors")


class Metrics:
    def __init__(self):
        self.requests = {}          # (stage, code) -> count
        self.bytes = {}             # (stage, code) -> body bytes sent
        self.in_flight = 0          # file bodies being sent now
        self.connections = 0        # open client connections
        self.boot = Histogram(BOOT_BUCKETS)
        self.reloads = 0
        self.tftp_requests = {}     # (stage, result) -> count
        self.tftp_bytes = {}        # stage -> bytes of the transfers started
        self.closes = {}            # reason (idle, stalled) -> connections serve closed by a limit
        self.tftp_core = {}         # the TFTP session table's counters (retransmits, expired, ...)
        self.tftp_core_source = None   # callable giving them (TftpServer.stats); read when asked
        self.pin_answers = {}       # serve --workers: by whom a node's catalog was chosen (worker, supervisor)
        self.send_budget = 0        # kernel-side send-buffer bytes the transfers may hold (0: no cap)
        self.send_capped = 0        # transfers whose send buffer the budget sizes now
        self.send_capped_sources = []   # callables counting them (each HTTP/HTTPS server); read when asked

    # -- serve --workers N: each worker counts its own traffic; the supervisor renders the sum ------------
    COUNTERS = ("requests", "bytes", "tftp_requests", "tftp_bytes", "closes", "tftp_core", "pin_answers")
    GAUGES = ("in_flight", "connections", "send_budget", "send_capped")

    def state(self):
        """This process's traffic counters and gauges, as plain values."""
        self._read_tftp_core()
        self._read_send_capped()
        out = {name: dict(getattr(self, name)) for name in self.COUNTERS}
        out.update((name, getattr(self, name)) for name in self.GAUGES)
        return out

    def take_sums(self, states):
        """Replace the traffic counters and gauges with the sums of `states` (from `state()`); the boot
        histogram and the reload count stay this object's own."""
        for name in self.COUNTERS:
            total = {}
            for st in states:
                for key, n in st.get(name, {}).items():
                    total[key] = total.get(key, 0) + n
            setattr(self, name, total)
        for name in self.GAUGES:
            setattr(self, name, sum(st.get(name, 0) for st in states))

    def _read_tftp_core(self):
        # The core counts per packet in C; they are copied only when someone asks (never per packet).
        if self.tftp_core_source is not None:
            self.tftp_core = {k: v for k, v in self.tftp_core_source().items()
                              if k in TFTP_CORE_EVENTS}

    def _read_send_capped(self):
        # counted over the open connections when someone asks, so the gauge cannot drift from them
        if self.send_capped_sources:
            self.send_capped = sum(source() for source in self.send_capped_sources)

    def tftp_request(self, stage, result, nbytes):
        """One TFTP read request: `stage` ipxe (a node's script), file (the TFTP root) or bad."""
        key = (stage, result)
        self.tftp_requests[key] = self.tftp_requests.get(key, 0) + 1
        if nbytes:
            self.tftp_bytes[stage] = self.tftp_bytes.get(stage, 0) + nbytes

    def pin_answer(self, by):
        self.pin_answers[by] = self.pin_answers.get(by, 0) + 1

    def closed(self, reason):
        self.closes[reason] = self.closes.get(reason, 0) + 1

    def request(self, stage, code):
        key = (stage, code)
        self.requests[key] = self.requests.get(key, 0) + 1

    def sent(self, stage, code, nbytes):
        key = (stage, code)
        self.bytes[key] = self.bytes.get(key, 0) + nbytes

    def render(self, nodes_by_stage, generation, unserved=0):
        self._read_tftp_core()
        self._read_send_capped()
        out = _counter("wwfast_http_requests_total", "HTTP requests by stage and status code.",
                       self.requests, "stage", "code")
        out += _counter("wwfast_http_sent_bytes_total", "Body bytes sent by stage and status code.",
                        self.bytes, "stage", "code")
        out += _counter("wwfast_tftp_requests_total", "TFTP read requests by stage (ipxe: a node's script by MAC, "
                        "file: the TFTP root, bad: no readable request) and result.",
                        self.tftp_requests, "stage", "result")
        out += _counter("wwfast_tftp_bytes_total", "Size of the files TFTP transfers were started for "
                        "(counted at request time: the TFTP core reports no per-transfer end).",
                        self.tftp_bytes, "stage")
        out += _counter("wwfast_tftp_transfer_events_total", "What the TFTP transfers did: packets sent and "
                        "retransmitted by the server's timer, resent RRQs (and first packets resent for them), "
                        "transfers expired or aborted.", self.tftp_core, "event")
        out += _counter("wwfast_http_connections_closed_total", "Connections serve closed by a limit (idle: "
                        "keep-alive with nothing to do past --idle-timeout; stalled: the client stopped reading).",
                        self.closes, "reason")
        if self.pin_answers:
            out += _counter("wwfast_boot_pin_answers_total", "serve --workers: the catalog for a node's request "
                            "chosen by the worker alone (pins settled on the current generation) or asked of the "
                            "supervisor (a publish is recent, or boots pinned to an older generation remain).",
                            self.pin_answers, "by")
        out += ["# HELP wwfast_http_transfers_in_flight File bodies being sent now.",
                "# TYPE wwfast_http_transfers_in_flight gauge",
                f"wwfast_http_transfers_in_flight {self.in_flight}",
                "# HELP wwfast_http_connections Open client connections.",
                "# TYPE wwfast_http_connections gauge",
                f"wwfast_http_connections {self.connections}",
                "# HELP wwfast_http_send_budget_bytes Socket send memory HTTP and HTTPS transfers may hold "
                "together (serve --send-budget; 0: no cap, the kernel sizes every buffer).",
                "# TYPE wwfast_http_send_budget_bytes gauge",
                f"wwfast_http_send_budget_bytes {self.send_budget}",
                "# HELP wwfast_http_transfers_capped Transfers whose send buffer is their share of the budget "
                "now (more transfers than the budget covers at the kernel's own maximum).",
                "# TYPE wwfast_http_transfers_capped gauge",
                f"wwfast_http_transfers_capped {self.send_capped}",
                "# HELP wwfast_nodes_by_stage Nodes by the last stage they fetched (\"none\": never seen).",
                "# TYPE wwfast_nodes_by_stage gauge"]
        for stage, n in sorted(nodes_by_stage.items()):
            out.append(f"wwfast_nodes_by_stage{_labels(stage=stage)} {n}")
        out += ["# HELP wwfast_boot_duration_seconds From a node's /ipxe request to its completed /runtime.",
                "# TYPE wwfast_boot_duration_seconds histogram"]
        out += list(self.boot.lines("wwfast_boot_duration_seconds"))
        out += ["# HELP wwfast_manifest_reloads_total Manifests swapped in since start.",
                "# TYPE wwfast_manifest_reloads_total counter",
                f"wwfast_manifest_reloads_total {self.reloads}",
                "# HELP wwfast_manifest_info The manifest generation being served.",
                "# TYPE wwfast_manifest_info gauge",
                f"wwfast_manifest_info{_labels(generation=generation)} 1",
                "# HELP wwfast_manifest_nodes_unserved Nodes of the manifest serve cannot index (see /status).",
                "# TYPE wwfast_manifest_nodes_unserved gauge",
                f"wwfast_manifest_nodes_unserved {unserved}"]
        return "\n".join(out) + "\n"
