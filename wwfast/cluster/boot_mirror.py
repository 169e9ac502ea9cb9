"""Nodes' boot records mirrored to etcd, so `wwfast status` on any server shows the whole cluster.

A server calls record(node, summary) when a node's boot changes stage; a thread writes what changed
since the last flush every `interval` seconds in transactions of at most `max_ops` puts (etcd's
default limit is 128 per transaction), latest summary per node only. While etcd is unreachable the
pending set waits (one entry per node, so it is bounded by the node count) and goes out on recovery.
Keys: `<prefix>boot/<node>` = the summary as JSON (it names the server that wrote it).
"""
import json
import logging
import threading

from wwfast.cluster.etcd import Etcd, EtcdUnavailable

log = logging.getLogger("wwfast.cluster")


def boot_key(prefix, node=""):
    return f"{prefix}boot/{node}"


class BootMirror:
    def __init__(self, etcd, prefix, server, interval=0.5, max_ops=128):
        self.etcd, self.prefix, self.server = etcd, prefix, server
        self.interval, self.max_ops = interval, max_ops
        self.pending = {}
        self.transactions = 0
        self.written = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="boot-mirror", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def record(self, node, summary):
        with self._lock:
            self.pending[node] = dict(summary, server=self.server)

    def flush(self):
        """Write everything pending now; False when etcd was unreachable (the rest stays pending)."""
        with self._lock:
            batch, self.pending = self.pending, {}
        items = sorted(batch.items())
        for start in range(0, len(items), self.max_ops):
            chunk = items[start:start + self.max_ops]
            ops = [Etcd.op_put(boot_key(self.prefix, node), json.dumps(summary, sort_keys=True))
                   for node, summary in chunk]
            try:
                self.etcd.txn(ops)
            except EtcdUnavailable as e:
                self.failures += 1
                log.warning("boot records not mirrored yet (%d nodes pending): %s", len(items) - start, e)
                with self._lock:
                    for node, summary in items[start:]:
                        self.pending.setdefault(node, summary)    # a newer record wins
                return False
            self.transactions += 1
            self.written += len(chunk)
        return True

    def _run(self):
        while not self._stop.wait(self.interval):
            self.flush()

    def stop(self):
        self._stop.set()
        self.thread.join(10)
        self.flush()


def read_all(etcd, prefix):
    """{node: summary} of every node any server recorded."""
    values, _ = etcd.get_prefix(boot_key(prefix))
    records = {}
    for key, value in values.items():
        try:
            records[key[len(boot_key(prefix)):]] = json.loads(value)
        except ValueError:
            log.warning("etcd %s is not JSON; skipped", key)
    return records
