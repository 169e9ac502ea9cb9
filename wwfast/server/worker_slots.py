"""The worker slots of `serve --workers N`: start a worker process per slot, stop them, restart the dead.

A slot keeps its sockets (bound once by the supervisor) while the process in it may change: a worker
started with `python -m wwfast.server.worker` gets the slot's sockets and its channel's end; a worker
whose channel closes is reaped (killed when it outlives its channel) and started again on the same
sockets, after a pause that grows while it keeps dying soon after starting. A worker that dies
before it was ever ready stops serve. What the supervisor keeps for all workers (ledger, manifest,
/metrics) is wwfast.server.supervisor's; the Supervisor class mixes WorkerSlots in.
"""
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import wwfast
from wwfast.server.channel import Channel

log = logging.getLogger("wwfast.serve")

SEQ_RANGE = 10 ** 12       # request numbers per worker process (the supervisor's ledger keeps 1..)
STOP_GRACE = 10.0          # seconds a worker gets to finish after SIGTERM
QUICK_DEATH = 5.0          # a worker dead this soon after starting is restarted after a growing pause
LOST_GRACE = 5.0           # seconds a worker may outlive its channel before it is killed


class Slot:
    """One worker place: its sockets stay, the process in it may change."""

    def __init__(self, index):
        self.index = index
        self.proc = None
        self.channel = None
        self.started = 0.0
        self.restarts = 0
        self.quick_deaths = 0
        self.ready = False
        self.lost_at = 0.0
        self.epoch = 0
        self.generation = ""
        self.snapshot = {}             # the worker's last traffic counters (wwfast.server.metrics.state)
        self.open = {}                 # (node, request number) -> True: began, not ended yet


class WorkerSlots:
    """Worker processes in `self.slots`, for the Supervisor (its channels, ledger and manifest)."""

    # -- start and stop ------------------------------------------------------------------------
    def spawn(self, slot):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = {name: group[slot.index].fileno() for name, group in self.groups.items()}
        env = dict(os.environ)
        top = os.path.dirname(os.path.dirname(os.path.abspath(wwfast.__file__)))
        env["PYTHONPATH"] = top + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            slot.proc = subprocess.Popen([sys.executable, "-m", "wwfast.server.worker", str(child.fileno())],
                                         pass_fds=[child.fileno(), self.word.fd, *fds.values()],
                                         stdin=subprocess.DEVNULL,
                                         env=env, process_group=0)
        except OSError as e:
            log.error("cannot start worker %d: %s", slot.index, e)
            parent.close()
            child.close()
            self.loop.call_later(1.0, self.spawn, slot)
            return
        child.close()
        slot.channel = Channel(parent)
        slot.started, slot.ready = time.monotonic(), False
        slot.epoch, slot.generation = self.current.epoch, self.current.generation
        slot.snapshot, slot.open = {}, {}
        live = self.live_epochs()
        slot.channel.send(("init", slot.index, self.worker_opts, fds,
                           [(e, self.epochs[e].raw) for e in sorted(live) if e], self.current.epoch,
                           next(self.incarnations) * SEQ_RANGE + 1, self.word.fd))
        if self.scaleout is not None:
            slot.channel.send(("members", self.scaleout.members()))
        self.loop.add_reader(slot.channel.fileno(), self.drain)
        if slot.channel.pending:
            self._want_write(slot)
        log.info("worker %d started (pid %d)", slot.index, slot.proc.pid)

    async def stop_workers(self):
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for slot in self.slots:
            while slot.proc is not None and slot.proc.poll() is None and time.monotonic() < deadline:
                self.drain()
                await asyncio.sleep(0.05)
            if slot.proc is not None and slot.proc.poll() is None:
                log.warning("worker %d did not stop in %.0f s; killed", slot.index, STOP_GRACE)
                slot.proc.kill()
                slot.proc.wait()
        self.drain()
        for slot in self.slots:
            if slot.channel is not None:
                self.lost(slot)

    # -- a worker ended ----------------------------------------------------------------------------
    def lost(self, slot):
        """The channel of `slot` closed: its worker is gone (or going). Its transfers end cut short."""
        if slot.channel is None:
            return
        self.loop.remove_reader(slot.channel.fileno())
        self.loop.remove_writer(slot.channel.fileno())
        slot.channel.close()
        slot.channel = None
        now = time.time()
        for node_id, seq in slot.open:
            self._apply(self.ledger.apply, ("ended", node_id, seq, now, 0, False, "worker died", False))
        slot.open = {}
        counters = {k: v for k, v in slot.snapshot.items() if isinstance(v, dict)}
        if counters:
            self.retired.append(counters)
        slot.snapshot = {}
        for key in [k for k in self.waiters if k[0] is slot]:
            self.waiters.pop(key).cancel()
        slot.lost_at = time.monotonic()
        self._reap(slot)

    def _reap(self, slot):
        proc = slot.proc
        if proc is None:
            return
        if proc.poll() is None:
            if self.stopping:
                return
            if time.monotonic() - slot.lost_at > LOST_GRACE:     # alive without its channel: of no use
                log.error("worker %d (pid %d) closed its channel but runs on; killed", slot.index, proc.pid)
                proc.kill()
            self.loop.call_later(0.05, self._reap, slot)
            return
        how = f"killed by signal {signal.Signals(-proc.returncode).name}" if proc.returncode < 0 \
            else f"exited with {proc.returncode}"
        slot.proc = None
        if self.stopping:
            log.info("worker %d (pid %d) %s", slot.index, proc.pid, how)
            return
        if not slot.ready and slot.restarts == 0:
            log.error("worker %d (pid %d) %s before it was ready; serve stops", slot.index, proc.pid, how)
            self.exit_code = 1
            self.stop.set()
            return
        lived = time.monotonic() - slot.started
        slot.quick_deaths = slot.quick_deaths + 1 if lived < QUICK_DEATH else 0
        pause = min(30.0, 0.5 * 2 ** (slot.quick_deaths - 1)) if slot.quick_deaths else 0.0
        slot.restarts += 1
        log.error("worker %d (pid %d) %s; restarting it%s", slot.index, proc.pid, how,
                  f" in {pause:.1f} s" if pause else "")
        self.loop.call_later(pause, self._respawn, slot)

    def _respawn(self, slot):
        if not self.stopping and slot.proc is None:
            self.spawn(slot)

    def _check(self):
        """Backstop: a worker that exited without its channel noticing."""
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is not None and slot.channel is not None:
                self.lost(slot)
        if not self.stopping:
            self.loop.call_later(1.0, self._check)
