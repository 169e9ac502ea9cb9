"""One worker of `serve --workers N`: HTTP, HTTPS and TFTP on the sockets its supervisor bound.

Started by wwfast.server.supervisor as `python -m wwfast.server.worker FD`: FD is this worker's end
of its channel; the first message on it says which slot it is, the serve options, the inherited
socket descriptors and the manifests being served. The boot ledger and the manifest watcher are the
supervisor's (wwfast.server.remote), and so is a scale-out's etcd part: a worker gets the live servers
and caches for its node scripts' headers pushed (wwfast.server.cluster_view.PushedView). Stops on
SIGTERM/SIGINT, or when the supervisor is gone.
"""
import asyncio
import logging
import signal
import socket
import sys

from wwfast import layout
from wwfast.define.cluster_settings import scaleout_wanted
from wwfast.server import loops, service
from wwfast.server.channel import Channel, ChannelClosed
from wwfast.server.cluster_view import PushedView
from wwfast.server.epoch_word import EpochWord
from wwfast.server.metrics import Metrics
from wwfast.server.remote import PushedCatalogs, RemoteLedger, SupervisorLink

log = logging.getLogger("wwfast.serve")

INIT_TIMEOUT = 60.0


def read_init(channel):
    """The supervisor's first message: ("init", slot, options, {name: fd}, [(epoch, raw)], current epoch,
    first request number, epoch word fd)."""
    waited = 0.0
    while waited < INIT_TIMEOUT:
        messages = channel.receive()
        if messages:
            return messages
        channel.wait_readable(1.0)
        waited += 1.0
    raise ChannelClosed("no init message from the supervisor")


async def serve_worker(opts, slot, socks, link, catalogs, first_seq, word, scaleout=None):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    link.attach(loop, on_lost=stop.set)
    ledger = RemoteLedger(link, catalogs, first_seq, word)

    def ready():
        link.send("ready", slot)
    try:
        await service.serve_protocols(opts, catalogs, ledger, stop, socks=socks, on_listening=ready,
                                      worker=slot, scaleout=scaleout)
    finally:
        link.detach()
        try:
            link.channel.flush_wait(2.0)      # the last transfers' ends reach the ledger
        except Exception:
            pass
    log.info("worker %d stopped", slot)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    channel = Channel(socket.socket(fileno=int(argv[0])))
    try:
        messages = read_init(channel)
    except ChannelClosed as e:
        print(f"wwfast worker: {e}", file=sys.stderr)
        return 1
    kind, slot, opts, fds, epochs, current, first_seq, word_fd = messages[0]
    assert kind == "init", kind
    root_level, serve_level = opts.log_levels
    logging.basicConfig(level=root_level, format=f"%(asctime)s %(levelname)s [worker {slot}] %(message)s")
    logging.getLogger("wwfast.serve").setLevel(serve_level)
    service.raise_nofile_limit()
    socks = {name: socket.socket(fileno=fd) for name, fd in fds.items()}
    catalogs = PushedCatalogs(layout.store_dir(opts.state_dir), opts.state_dir)
    link = SupervisorLink(channel, catalogs, Metrics())
    scaleout = None
    if scaleout_wanted(opts.settings):            # the supervisor runs etcd; this worker gets the members
        scaleout = PushedView(opts.settings)
        link.on_members = scaleout.update
    for epoch, raw in epochs:
        catalogs.add(epoch, raw, current=epoch == current)
    for message in messages[1:]:
        link.handle(message)
    word = EpochWord(word_fd)
    loops.run(serve_worker(opts, slot, socks, link, catalogs, first_seq, word, scaleout), requested=opts.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
