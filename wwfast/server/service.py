"""Run the serve stage: HTTP (and TFTP when enabled) in one event loop until SIGTERM/SIGINT.

Shared by `python -m stages.serve` and `wwfast serve`. serve never builds: it
reads STATE/publish/manifest.json and STATE/store only.
"""
import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal

from wwfast.server import loops
from wwfast.server.catalog import CatalogWatcher
from wwfast.errors import UsageError
from wwfast.server.http import Limits
from wwfast.server.http_server import HttpServer
from wwfast.server.https import HttpsServer
from wwfast.server.ledger import BootLedger
from wwfast.server.provision import Provisioner
from wwfast.server.send_budget import SendBudget
from wwfast.define.cluster_settings import scaleout_wanted

log = logging.getLogger("wwfast.serve")


class ServeOptions:
    """Everything the serve stage needs, settings file first, command-line flags on top."""

    def __init__(self, state_dir, http_bind="0.0.0.0", http_port=9873, secure=False, tftp_enabled=True,
                 tftp_bind="0.0.0.0", tftp_port=69, tftp_root="/usr/lib/ipxe", send_mode="sendfile",
                 loop=None, limits=None, tls=False, tls_port=9874, conf_dir="conf"):
        self.state_dir = state_dir
        self.tls, self.tls_port, self.conf_dir = tls, tls_port, conf_dir   # HTTPS beside HTTP
        self.http_bind, self.http_port, self.secure = http_bind, http_port, secure
        self.tftp_enabled, self.tftp_bind, self.tftp_port, self.tftp_root = (
            tftp_enabled, tftp_bind, tftp_port, tftp_root)
        self.send_mode, self.loop = send_mode, loop
        self.limits = limits or Limits()
        self.secure_flag = False        # --secure/--no-secure given: it wins over the manifest's copy
        self.settings = None            # the Settings, for the scale-out block (`cluster:`)
        self.workers = 1                # processes sharing the ports (None: one per core)
        self.send_budget_mb = None      # socket send memory of all HTTP transfers (None: from tcp_mem; 0: no cap)
        self.log_levels = (logging.INFO, logging.INFO)   # root and wwfast.serve, handed to workers

    @classmethod
    def from_settings(cls, settings, state_dir, args):
        """`settings`: a wwfast.define.settings.Settings; `args`: argparse namespace of the serve flags."""
        opts = cls(state_dir, http_bind=settings.http_bind, http_port=settings.http_port,
                   secure=settings.secure, tftp_enabled=settings.tftp_enabled, tftp_bind=settings.tftp_bind,
                   tftp_port=settings.tftp_port, tftp_root=settings.tftp_root, tls=settings.tls,
                   tls_port=settings.tls_port, conf_dir=getattr(args, "conf", None) or "conf")
        if getattr(args, "tls_port", None) is not None:
            opts.tls_port = args.tls_port
        if args.bind:
            opts.http_bind = opts.tftp_bind = args.bind
        if args.http_port is not None:
            opts.http_port = args.http_port
        if args.tftp_port is not None:
            opts.tftp_port = args.tftp_port
        if args.tftp_root:
            opts.tftp_root = args.tftp_root
        if args.no_tftp:
            opts.tftp_enabled = False
        if args.secure is not None:
            opts.secure = args.secure
            opts.secure_flag = True
        opts.send_mode = args.send_mode
        opts.loop = args.loop
        opts.limits = Limits(header_timeout=args.header_timeout, idle_timeout=args.idle_timeout)
        opts.settings = settings
        opts.workers = args.workers
        opts.send_budget_mb = args.send_budget
        if opts.send_budget_mb is not None and opts.send_budget_mb < 0:
            raise UsageError(f"--send-budget {opts.send_budget_mb:g}: give a size in MB, or 0 for no cap")
        if opts.workers is not None and opts.workers < 1:
            raise UsageError(f"--workers {opts.workers}: give at least 1")
        opts.log_levels = (logging.getLogger().level, logging.getLogger("wwfast.serve").getEffectiveLevel())
        return opts


def add_arguments(parser):
    """The serve flags, shared by the stage and `wwfast serve`."""
    parser.add_argument("--bind", help="address for HTTP and TFTP (overrides the settings file)")
    parser.add_argument("--http-port", type=int, help="HTTP port (settings: warewulf: port, default 9873)")
    parser.add_argument("--tftp-port", type=int, help="TFTP port (settings: tftp: port, default 69)")
    parser.add_argument("--tftp-root", help="directory of iPXE binaries served over TFTP")
    parser.add_argument("--no-tftp", action="store_true", help="HTTP only")
    parser.add_argument("--tls-port", type=int, help="HTTPS port when TLS is on (settings: warewulf: tls port, "
                                                     "default 9874)")
    parser.add_argument("--secure", action=argparse.BooleanOptionalAction, default=None,
                        help="serve the runtime overlay only to the node's address from a privileged port "
                             "(overrides warewulf: secure)")
    parser.add_argument("--send-mode", choices=("sendfile", "mmap"), default="sendfile",
                        help="how file bodies are sent (default sendfile)")
    parser.add_argument("--loop", choices=("auto", "uvloop", "asyncio"),
                        help="event loop (default: uvloop when installed; env WWFAST_LOOP)")
    parser.add_argument("--header-timeout", type=float, default=10.0,
                        help="seconds a client may take to send a request's headers (408 after)")
    parser.add_argument("--idle-timeout", type=float, default=75.0,
                        help="seconds an idle keep-alive connection stays open")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes sharing the HTTP and TFTP ports (SO_REUSEPORT) under one supervisor that "
                             "keeps the boot ledger and restarts a worker that dies (default: one per core; "
                             "1: a single process)")
    parser.add_argument("--send-budget", type=float, default=None, metavar="MB",
                        help="socket send memory all HTTP and HTTPS transfers may hold together; past it each "
                             "connection gets its share as SO_SNDBUF (default: a quarter of the kernel's TCP "
                             "memory-pressure threshold, net.ipv4.tcp_mem; 0: no cap, the kernel sizes every buffer)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging (requests are logged at info)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (no line per request)")


def raise_nofile_limit():
    """Each download holds a socket and a file: lift the soft open-file limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit above %d: %s", soft, e)
    return soft


def _tftp_class():
    try:
        from wwfast.server.tftp import TftpServer
    except ImportError:
        return None
    return TftpServer


def attach_scaleout(opts, loop, ledger, watcher, on_members=None):
    """serve's scale-out part (wwfast.server.scaleout), attached to the process's ledger and manifest
    watcher; None without `cluster:` settings (the etcd client is imported only with them)."""
    if opts.settings is None or not scaleout_wanted(opts.settings):
        return None
    from wwfast.server.scaleout import ScaleOut
    return ScaleOut(opts.settings, opts.state_dir).attach(loop, ledger, watcher, on_members=on_members)


def stop_event(loop):
    """An event SIGTERM and SIGINT set."""
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve_forever(opts):
    """One process: HTTP, HTTPS and TFTP with the boot ledger and the manifest watcher beside them."""
    loop = asyncio.get_running_loop()
    stop = stop_event(loop)
    ledger = BootLedger(opts.state_dir)
    watcher = CatalogWatcher(opts.state_dir)
    scaleout = attach_scaleout(opts, loop, ledger, watcher)
    ledger.attach(loop)

    def ready():
        watcher.start(loop)
        if scaleout is not None:
            scaleout.start()
    try:
        await serve_protocols(opts, watcher, ledger, stop, scaleout=scaleout, on_ready=ready)
    finally:
        watcher.stop()
        if scaleout is not None:
            await loop.run_in_executor(None, scaleout.stop)
        await ledger.close()
    log.info("stopped")


async def serve_protocols(opts, watcher, ledger, stop, scaleout=None, socks=None, on_ready=None,
                          on_listening=None, worker=None):
    """Answer HTTP (HTTPS, TFTP) from `watcher`'s catalog with `ledger` until `stop` is set.

    `socks`: {"http": ..., "https": ..., "tftp": ...} already bound (a worker of serve --workers N),
    else each server binds its own. `on_ready()` runs once the servers exist (it may swap a catalog in),
    `on_listening()` once they all listen.
    """
    ssl_context = _tls_context(opts) if opts.tls else None   # a missing key: say so first
    socks = socks or {}
    provisioner = Provisioner(watcher, ledger, secure=opts.secure, follow_manifest_secure=not opts.secure_flag,
                              tls_port=opts.tls_port if opts.tls else None, scaleout=scaleout)
    provisioner.worker = worker
    budget = SendBudget.for_process(opts.workers or default_workers(), opts.send_budget_mb)
    http = HttpServer(provisioner, opts.http_bind, opts.http_port, send_mode=opts.send_mode, limits=opts.limits,
                      sock=socks.get("http"), send_budget=budget)
    https = HttpsServer(provisioner, opts.http_bind, opts.tls_port, ssl_context, limits=opts.limits,
                        sock=socks.get("https"), send_budget=budget) if opts.tls else None

    def swapped(old, new):
        ledger.manifest_swapped()
        provisioner.catalog_swapped(old)
        for server in (http, https):
            if server is not None:
                server.maps.keep_only(new)
    watcher.on_swap = swapped
    if on_ready is not None:
        on_ready()
    tftp = None
    async with contextlib.AsyncExitStack() as listeners:
        await listeners.enter_async_context(http)
        if https is not None:
            await listeners.enter_async_context(https)
        if opts.tftp_enabled:
            cls = _tftp_class()
            if cls is None:
                log.warning("TFTP is enabled but wwfast.server.tftp is not available; HTTP only")
            else:
                tftp = cls(opts.tftp_root, opts.tftp_bind, opts.tftp_port, sock=socks.get("tftp"),
                           resolve=provisioner.tftp_resolve, on_request=provisioner.tftp_requested,
                           on_end=provisioner.tftp_ended)
                await tftp.start()
                provisioner.ledger.metrics.tftp_core_source = tftp.stats
                log.info("TFTP on %s:%d from %s", opts.tftp_bind, opts.tftp_port, opts.tftp_root)
        if on_listening is not None:
            on_listening()
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            if tftp is not None:
                await tftp.close()


def configure_logging(verbose=False, quiet=False):
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    if verbose:
        logging.getLogger("wwfast.serve").setLevel(logging.DEBUG)


def _tls_context(opts):
    from wwfast.configure import tls    # cryptography: imported only when TLS is on (each worker saves ~10 MB)
    return tls.server_context(opts.conf_dir)


def default_workers():
    """One worker per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def run(opts):
    if opts.tls:
        _tls_context(opts)   # no key and certificate: say so before listening at all
    limit = raise_nofile_limit()
    log.info("open-file limit %d; event loop %s", limit, loops.loop_name(opts.loop))
    workers = opts.workers or default_workers()
    if workers > 1:
        from wwfast.server.supervisor import Supervisor
        return Supervisor(opts, workers).run()
    loops.run(serve_forever(opts), requested=opts.loop)
    return 0
