"""The standalone TFTP runner: `python -m wwfast.server.tftp`, one process or SO_REUSEPORT workers.

For tests and benchmarks; serve runs wwfast.server.tftp.TftpServer inside its own workers instead.
    python -m wwfast.server.tftp --root DIR --port 6969 --bind 127.0.0.1 [--workers 2]
"""
import argparse
import asyncio
import logging
import os
import signal
import socket

from wwfast import tftp as _facade
from wwfast.server import loops, tftp
from wwfast.server.tftp import TftpServer, raise_fd_limit

log = logging.getLogger("wwfast.tftp")


async def _serve(args, reuse_port, ready):
    server = TftpServer(args.root, args.bind, args.port, timeout=args.timeout, retries=args.retries,
                        reuse_port=reuse_port, max_windowsize=args.max_windowsize)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        if ready:
            print(f"wwfast tftp: serving {server.root} on {args.bind}:{server.port} "
                  f"(core {'compiled' if _facade.COMPILED else 'pure'}, loop {loops.loop_name(args.loop)}, "
                  f"workers {args.workers})", flush=True)
        await stop.wait()
        log.info("tftp: stopping: %s", server.stats())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m wwfast.server.tftp", description=tftp.__doc__.split("\n")[0])
    parser.add_argument("--root", required=True, help="directory served (read only)")
    parser.add_argument("--port", type=int, default=69)
    parser.add_argument("--bind", default="0.0.0.0")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes sharing the port with SO_REUSEPORT (transfers use their own ports)")
    parser.add_argument("--timeout", type=float, default=1.0, help="retransmission timeout, seconds")
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument("--max-windowsize", type=int, default=None)
    parser.add_argument("--loop", default=None, help="auto, uvloop or asyncio")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")
    raise_fd_limit()
    if args.workers <= 1:
        loops.run(_serve(args, False, True), args.loop)
        return 0
    if args.port == 0:
        parser.error("--workers needs an explicit --port (all workers share it)")
    # Bind once in the parent so a busy port fails loudly before any fork.
    probe = socket.socket(socket.AF_INET6 if ":" in args.bind else socket.AF_INET, socket.SOCK_DGRAM)
    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    probe.bind((args.bind, args.port))
    probe.close()
    children = []
    for i in range(args.workers):
        pid = os.fork()
        if pid == 0:
            probe.close()
            try:
                loops.run(_serve(args, True, i == 0), args.loop)
            finally:
                os._exit(0)
        children.append(pid)

    def forward(signum, _frame):
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for pid in children:
        _, code = os.waitpid(pid, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return status
