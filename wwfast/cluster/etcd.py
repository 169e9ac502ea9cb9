"""etcd v3 through its JSON gateway, with the maintained `etcd3gw` client, over several endpoints.

Why etcd3gw: it speaks the v3 HTTP/JSON gateway that Debian's etcd-server 3.4 always serves, with plain
`requests` (no grpcio, which misbehaves across fork(), and `wwfast serve --workers` forks); it is what
OpenStack's tooz uses. It talks to one endpoint, so this module adds what a cluster needs: a request
that cannot reach a member (dead, no leader, timeout) goes to the next one, so one member down is no
error; and a watch that resumes on another member from the next revision, asking etcd to end the stream
when its member loses the leader (the gateway's `Grpc-Metadata-hasleader` header).
"""
import base64
import json
import logging
import socket
import threading
import time
import urllib.parse

import etcd3gw
from etcd3gw import exceptions as etcd_exceptions

log = logging.getLogger("wwfast.cluster")


class EtcdUnavailable(RuntimeError):
    """No endpoint answered."""


def _b64(data):
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def _unb64(text):
    return base64.b64decode(text or "")


def local_first(endpoints):
    """The endpoints whose host is an address of this host first (its own etcd member: what the server
    watches then needs no trip over its own, possibly saturated, link), the others in the given order."""
    local = []
    for url in endpoints:
        host = urllib.parse.urlsplit(url).hostname or ""
        try:
            for family, _, _, _, addr in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.bind((addr[0], 0))            # succeeds only for this host's own addresses
                local.append(url)
                break
        except OSError:
            continue
    return local + [url for url in endpoints if url not in local]


def prefix_end(prefix):
    """The range end that selects every key starting with `prefix`."""
    raw = bytearray(prefix.encode() if isinstance(prefix, str) else prefix)
    while raw and raw[-1] == 0xFF:
        raw.pop()
    raw[-1] += 1
    return bytes(raw)


class Etcd:
    # A member killed while it led: the others answer "no leader" / 503 until they elect one (about a
    # second, more on a loaded host). Rounds over every endpoint are retried this long before a caller
    # (an admin's publish, serve's follower) sees an error.
    RETRY_FOR = 10.0

    def __init__(self, endpoints, timeout=2.0, retry_for=RETRY_FOR):
        if not endpoints:
            raise ValueError("no etcd endpoint")
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.retry_for = retry_for
        self.clients = []
        for url in self.endpoints:
            u = urllib.parse.urlsplit(url)
            self.clients.append(etcd3gw.Etcd3Client(host=u.hostname, port=u.port, protocol=u.scheme,
                                                    timeout=timeout, api_path="/v3/"))
        self._current = 0
        self._lock = threading.Lock()

    # -- failover --------------------------------------------------------------------------------------
    def call(self, path, body):
        """POST one gateway request (e.g. '/kv/range'): each endpoint in turn, the last good one first, in
        rounds with a growing pause for up to `retry_for` seconds (an election in progress)."""
        deadline = time.monotonic() + self.retry_for
        pause = 0.1
        while True:
            try:
                return self._call_round(path, body)
            except EtcdUnavailable:
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _call_round(self, path, body):
        errors = []
        start = self._current
        for i in range(len(self.clients)):
            index = (start + i) % len(self.clients)
            client = self.clients[index]
            try:
                result = client.post(client.get_url(path), json=body)
            except etcd_exceptions.PreconditionFailedError:
                raise
            except (etcd_exceptions.Etcd3Exception, ValueError, OSError) as e:
                errors.append(f"{self.endpoints[index]}: {e}")
                continue
            if index != self._current:
                log.info("etcd: now using %s", self.endpoints[index])
                self._current = index
            return result
        raise EtcdUnavailable("no etcd endpoint answered: " + "; ".join(errors))

    # -- keys --------------------------------------------------------------------------------------------
    def get(self, key):
        """(value bytes, mod_revision) or (None, 0)."""
        result = self.call("/kv/range", {"key": _b64(key)})
        kvs = result.get("kvs") or []
        if not kvs:
            return None, 0
        return _unb64(kvs[0].get("value")), int(kvs[0].get("mod_revision", 0))

    def get_prefix(self, prefix):
        """({key str: value bytes}, store revision)."""
        result = self.call("/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))})
        values = {_unb64(kv["key"]).decode(): _unb64(kv.get("value")) for kv in result.get("kvs") or []}
        return values, int(result.get("header", {}).get("revision", 0))

    def keys(self, prefix):
        """The keys starting with `prefix` (their values are not sent)."""
        result = self.call("/kv/range", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                         "keys_only": True})
        return [_unb64(kv["key"]).decode() for kv in result.get("kvs") or []]

    def put(self, key, value, lease=None):
        body = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = lease
        self.call("/kv/put", body)

    def delete(self, key):
        self.call("/kv/deleterange", {"key": _b64(key)})

    @staticmethod
    def op_put(key, value, lease=None):
        op = {"request_put": {"key": _b64(key), "value": _b64(value)}}
        if lease:
            op["request_put"]["lease"] = lease
        return op

    @staticmethod
    def op_delete_prefix(prefix):
        return {"request_delete_range": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))}}

    @staticmethod
    def compare_mod_revision(key, revision):
        return {"key": _b64(key), "result": "EQUAL", "target": "MOD", "mod_revision": revision}

    def txn(self, success, compare=(), failure=()):
        """One transaction; True when the compares held (and `success` ran)."""
        result = self.call("/kv/txn", {"compare": list(compare), "success": list(success),
                                       "failure": list(failure)})
        return bool(result.get("succeeded", not compare))

    # -- leases ------------------------------------------------------------------------------------------
    def grant(self, ttl):
        return int(self.call("/lease/grant", {"TTL": int(ttl)})["ID"])

    def keepalive(self, lease):
        """The lease's new TTL, or -1 when it expired already."""
        result = self.call("/lease/keepalive", {"ID": lease}).get("result", {})
        return int(result.get("TTL", -1))

    def revoke(self, lease):
        self.call("/kv/lease/revoke", {"ID": lease})

    # -- watch -------------------------------------------------------------------------------------------
    def watch(self, key, callback, prefix=False, start_revision=None):
        """Call `callback(events)` for each batch of changes (a list of (type, key, value, mod_revision),
        type 'PUT' or 'DELETE'). Runs in a thread until the returned Watch is stopped."""
        return Watch(self, key, callback, prefix, start_revision)


class Watch:
    """A watch stream that survives its member: it reopens on the next endpoint from the next revision."""

    RETRY_DELAY = 0.2

    def __init__(self, etcd, key, callback, prefix, start_revision):
        self.etcd, self.key, self.callback, self.prefix = etcd, key, callback, prefix
        self.next_revision = start_revision
        self._stopped = threading.Event()
        self._response = None
        self.reconnects = 0
        self.thread = threading.Thread(target=self._run, name=f"etcd-watch {key}", daemon=True)
        self.thread.start()

    def stop(self):
        self._stopped.set()
        response = self._response
        if response is not None:
            try:
                response.raw._fp.fp.raw._sock.shutdown(2)    # wake the blocked read at once
            except Exception:       # noqa: BLE001 - best effort; close() below ends it too
                pass
            response.close()

    def _request(self):
        create = {"key": _b64(self.key)}
        if self.prefix:
            create["range_end"] = _b64(prefix_end(self.key))
        if self.next_revision:
            create["start_revision"] = self.next_revision
        return {"create_request": create}

    def _run(self):
        index = self.etcd._current
        while not self._stopped.is_set():
            client = self.etcd.clients[index % len(self.etcd.clients)]
            try:
                self._stream(client)
            except Exception as e:  # noqa: BLE001 - any failure of one member: go on with the next
                if not self._stopped.is_set():
                    log.info("etcd watch on %s ended: %s", self.etcd.endpoints[index % len(self.etcd.clients)], e)
            if self._stopped.is_set():
                return
            self.reconnects += 1
            index += 1
            self._stopped.wait(self.RETRY_DELAY)

    def _stream(self, client):
        self._response = response = client.session.post(
            client.get_url("/watch"), json=self._request(), stream=True,
            headers={"Grpc-Metadata-hasleader": "true"}, timeout=(self.etcd.timeout, None))
        try:
            if response.status_code != 200:
                raise EtcdUnavailable(f"watch: HTTP {response.status_code}")
            for line in response.iter_lines(chunk_size=None):
                if self._stopped.is_set():
                    return
                if not line.strip():
                    continue
                message = json.loads(line)
                if "error" in message:
                    raise EtcdUnavailable(f"watch: {message['error']}")
                result = message.get("result") or {}
                if result.get("canceled"):
                    raise EtcdUnavailable(f"watch canceled: {result.get('cancel_reason', '')}")
                revision = int(result.get("header", {}).get("revision", 0) or 0)
                events = []
                for ev in result.get("events") or []:
                    kv = ev.get("kv", {})
                    events.append((ev.get("type", "PUT"), _unb64(kv.get("key")).decode(), _unb64(kv.get("value")),
                                   int(kv.get("mod_revision", 0))))
                if events:
                    self.next_revision = max(e[3] for e in events) + 1
                    self.callback(events)
                elif revision and not self.next_revision:
                    self.next_revision = revision + 1
            raise EtcdUnavailable("watch stream closed")
        finally:
            response.close()
            self._response = None

