"""Membership of wwfast servers and caches in etcd, under leases.

An Announcer keeps `<prefix>members/<kind>/<name>` alive under a lease while its member is healthy: it
refreshes the lease every ttl/3 s; when the health check fails (a cache whose nginx is gone) it revokes
the lease, so the member drops out at once; when the host itself dies or is cut off, the lease expires
and etcd deletes the key within one TTL. A MemberView follows one kind through a watch and always holds
the live members; it records every change (time, what) so tests and benchmarks read what happened.
"""
import json
import logging
import threading
import time

from wwfast.cluster.etcd import EtcdUnavailable
from wwfast.cluster.placement import Member

log = logging.getLogger("wwfast.cluster")
KINDS = ("servers", "caches")


def member_key(prefix, kind, name=""):
    return f"{prefix}members/{kind}/{name}"


class Announcer:
    def __init__(self, etcd, prefix, kind, member, ttl, healthy=None):
        assert kind in KINDS
        self.etcd, self.key, self.member, self.ttl = etcd, member_key(prefix, kind, member.name), member, ttl
        self.healthy = healthy or (lambda: True)
        self.lease = None
        self.events = []                  # (time, "joined"|"left"|"lease lost"|"etcd unavailable")
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"announce {self.key}", daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _note(self, what):
        self.events.append((time.time(), what))
        log.info("membership %s: %s", self.key, what)

    def _join(self):
        self.lease = self.etcd.grant(self.ttl)
        self.etcd.put(self.key, json.dumps(self.member.as_dict(), sort_keys=True), lease=self.lease)
        self._note("joined")

    def _leave(self):
        lease, self.lease = self.lease, None
        if lease is not None:
            try:
                self.etcd.revoke(lease)
            except EtcdUnavailable:
                pass                      # it will expire
            self._note("left")

    def step(self):
        """One beat: join, refresh or leave as health and the lease say."""
        if not self.healthy():
            self._leave()
            return
        if self.lease is None:
            self._join()
        elif self.etcd.keepalive(self.lease) <= 0:
            self._note("lease lost")
            self.lease = None
            self._join()

    def _run(self):
        while not self._stop.is_set():
            try:
                self.step()
            except EtcdUnavailable as e:
                self._note("etcd unavailable")
                log.warning("membership %s: %s", self.key, e)
            self._stop.wait(max(self.ttl / 3.0, 0.5))

    def stop(self, leave=True):
        self._stop.set()
        self.thread.join(10)
        if leave:
            self._leave()


class MemberView:
    """The live members of one kind, kept current by a watch."""

    def __init__(self, etcd, prefix, kind, on_change=None):
        self.etcd, self.prefix, self.kind = etcd, member_key(prefix, kind), kind
        self.on_change = on_change
        self.members = {}
        self.history = []                 # (time, "PUT"|"DELETE", name)
        self._lock = threading.Lock()
        self.watch = None

    def start(self):
        values, revision = self.etcd.get_prefix(self.prefix)
        with self._lock:
            for key, value in values.items():
                member = self._parse(key, value)
                if member is not None:
                    self.members[member.name] = member
        self.watch = self.etcd.watch(self.prefix, self._events, prefix=True, start_revision=revision + 1)
        return self

    def _parse(self, key, value):
        try:
            return Member.from_dict(json.loads(value))
        except (ValueError, KeyError, TypeError):
            log.warning("membership: ignoring malformed %s", key)
            return None

    def _events(self, events):
        with self._lock:
            for kind, key, value, _ in events:
                name = key[len(self.prefix):]
                if kind == "DELETE":
                    self.members.pop(name, None)
                else:
                    member = self._parse(key, value)
                    if member is None:
                        continue
                    self.members[name] = member
                self.history.append((time.time(), kind, name))
        if self.on_change:
            self.on_change(self.current())

    def current(self):
        """The live members, sorted by name."""
        with self._lock:
            return [self.members[n] for n in sorted(self.members)]

    def stop(self):
        if self.watch is not None:
            self.watch.stop()
