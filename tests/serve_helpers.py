"""Helpers for the serve tests: a store + manifest built per docs/formats.md, and a server subprocess."""
import contextlib
import gzip
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import zstandard

from wwfast import fsutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def store_file(state, data, suffix):
    """Put `data` in STATE/store under its content name; the manifest entry for it."""
    name = hashlib.sha256(data).hexdigest() + suffix
    fsutil.atomic_write(os.path.join(state, "store", name), data, fsync=False)
    return {"file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def cpio_entries(state, raw):
    """zst and gz store entries for an uncompressed cpio payload `raw` (named by its own hash)."""
    base = hashlib.sha256(raw).hexdigest()
    out = {}
    for enc, data in (("zst", zstandard.ZstdCompressor(level=1).compress(raw)),
                      ("gz", gzip.compress(raw, compresslevel=1, mtime=0))):
        path = os.path.join(state, "store", f"{base}.cpio.{enc}")
        fsutil.atomic_write(path, data, fsync=False)
        out[enc] = {"file": f"{base}.cpio.{enc}", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return out


def make_node(state, node_id, mac, image_raw, address="", asset_key="", tag=b""):
    ipxe = b"#!ipxe\necho node " + node_id.encode() + b"\n" + tag
    kernel = b"KERNEL-" + node_id.encode() + b"-" + tag + os.urandom(4096)
    entry = {
        "macs": [mac], "addresses": [address] if address else [], "asset_key": asset_key,
        "artifacts": {
            "ipxe": {"raw": dict(store_file(state, ipxe, ".ipxe"))},
            "kernel": {"raw": dict(store_file(state, kernel, ".kernel"))},
            "image": cpio_entries(state, image_raw),
            "system": cpio_entries(state, b"SYSTEM " + node_id.encode() + tag),
            "runtime": cpio_entries(state, b"RUNTIME " + node_id.encode() + tag),
        },
    }
    return entry


def publish(state, nodes, generation, unknown=b"#!ipxe\necho unknown node\nsleep 60\nreboot\n", secure=False):
    """Write STATE/publish/manifest.json atomically (the commit point), as the compress stage does."""
    manifest = {"format": 1, "generation": generation, "settings": {"secure": secure, "update_interval": 60},
                "unknown_ipxe": {"raw": store_file(state, unknown, ".ipxe")}, "nodes": nodes}
    fsutil.atomic_write(os.path.join(state, "publish", "manifest.json"),
                        json.dumps(manifest, sort_keys=True, indent=1) + "\n")
    return manifest


def store_bytes(state, entry):
    with open(os.path.join(state, "store", entry["file"]), "rb") as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=60, log_path=None):
    """Until the server listens (or exits); the timeout is a backstop for a loaded machine."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = open(log_path, errors="replace").read()[-2000:] if log_path else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("server did not start listening")


def wait_log(log_path, text, proc, offset=0, timeout=60):
    """Wait until the server logs `text` past `offset` of its log file (the timeout: a backstop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, errors="replace") as f:
            f.seek(offset)
            if text in f.read():
                return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"server never logged {text!r}")


@contextlib.contextmanager
def running_server(state, port, *extra, env=None, log_path=None, settings="warewulf:\n  secure: false\n",
                   tftp_port=None, tftp_root=None):
    """`python -m stages.serve` on 127.0.0.1:port (HTTP only unless given a TFTP port and root),
    stopped with SIGTERM."""
    conf = os.path.join(state, "conf")
    fsutil.atomic_write(os.path.join(conf, "wwfast.yaml"), settings, fsync=False)
    tftp = ["--tftp-port", str(tftp_port), "--tftp-root", str(tftp_root)] if tftp_port else ["--no-tftp"]
    cmd = [sys.executable, "-m", "stages.serve", "--conf", conf, "--state", state, "--bind", "127.0.0.1",
           "--http-port", str(port), *tftp, *extra]
    log_path = log_path or os.path.join(state, "serve.log")
    err = open(log_path, "ab")
    log_start = err.tell()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                            env={**os.environ, **(env or {})})
    try:
        try:
            wait_port(port, proc, log_path=log_path)
            if tftp_port:        # TFTP starts after HTTP: a first RRQ before it would wait for a retry
                wait_log(log_path, "TFTP on ", proc, log_start)
        except RuntimeError:
            proc.kill()
            raise
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        err.close()
