"""Kill a stage at a known point of its run, not after a sampled delay.

A stage commits its work with a few file-system calls (os.replace/rename/link/unlink). `stop_at` runs it
and makes the process (main or forked worker) that reaches the first call matching a point stop just
before (or just after) it and say so on a pipe; then the whole process group is killed with SIGKILL. The
kill lands inside the run, at a point the test names, whatever the machine's load. A point is
"when op pattern": when = before|after, pattern an fnmatch pattern of "SRC>DST" (file names, no
directories) for replace/rename/link, of the file name for unlink/remove.
WWFAST_KILLPOINT_LOG=path makes the wrapper append every such call there ("op name"), to see what a
stage commits when choosing points.
"""
import os
import select
import signal
import subprocess
import sys

from compress_support import ROOT

OPS = ("replace", "rename", "link", "unlink", "remove")

# Runs the stage module with its commit calls wrapped. argv: module, then the stage's own arguments.
# WWFAST_KILLPOINT_LOG: append every call there. WWFAST_KILLPOINT: "when op pattern" and
# WWFAST_KILLPOINT_FD: where to say "stopped" (then block until killed).
WRAPPER = r"""
import fnmatch, os, runpy, sys, time
log, point, fd = (os.environ.get(k) for k in ("WWFAST_KILLPOINT_LOG", "WWFAST_KILLPOINT", "WWFAST_KILLPOINT_FD"))
when, op_name, pattern = point.split(" ", 2) if point else (None, None, None)

def stop(what):
    os.write(int(fd), f"stopped {what}\n".encode())
    while True:                       # until the test kills the process group
        time.sleep(3600)

def wrap(op):
    real = getattr(os, op)
    def call(*args, **kw):
        names = [os.path.basename(os.fsdecode(a)) for a in args[:2 if op in ("replace", "rename", "link") else 1]]
        if log:
            with open(log, "a") as f:
                f.write(f"{op} {names[-1]}\n")
        hit = point and op == op_name and fnmatch.fnmatchcase(">".join(names), pattern)
        if hit and when == "before":
            stop(f"{point} ({'>'.join(names)})")
        out = real(*args, **kw)
        if hit and when == "after":
            stop(f"{point} ({'>'.join(names)})")
        return out
    setattr(os, op, call)

for op in %r:
    wrap(op)
module = sys.argv[1]
sys.argv = [module] + sys.argv[2:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
""" % (OPS,)


def _cmd(module, args):
    return [sys.executable, "-c", WRAPPER, module, *map(str, args)]


def stop_at(module, args, when, op, pattern, backstop=600):
    """Start the stage, wait for it to stop at (when, op, pattern), kill -9 its process group. Returns the
    call it stopped at ("SRC>DST" or the removed name). Fails if the run ended without reaching that point."""
    rfd, wfd = os.pipe()
    point = f"{when} {op} {pattern}"
    proc = subprocess.Popen(_cmd(module, args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            pass_fds=(wfd,), start_new_session=True,
                            env=dict(os.environ, WWFAST_KILLPOINT=point, WWFAST_KILLPOINT_FD=str(wfd)))
    os.close(wfd)
    try:
        said = b""
        while b"\n" not in said:
            ready, _, _ = select.select([rfd], [], [], backstop)     # a backstop: the stop is what we wait for
            assert ready, f"{module} did not reach {point} within {backstop} s"
            chunk = os.read(rfd, 200)
            assert chunk, f"{module} ended without reaching {point} (exit {proc.wait()}): {proc.stderr.read()}"
            said += chunk
        said = said.decode().splitlines()[0]      # the first process to stop (a parallel one may follow)
        assert said.startswith(f"stopped {point} ("), said
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
        os.close(rfd)
    assert proc.returncode == -signal.SIGKILL, proc.returncode
    proc.stderr.close()
    return said[len(f"stopped {point} ("):-1]
