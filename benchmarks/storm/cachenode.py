"""Simulated nodes booting through a cache tier: one process per rack namespace, every node in one event loop.

    python -m storm.cachenode PLAN.json OUT.json      (started inside the rack's namespace; then "go T0\n"
                                                     on stdin, T0 a time.time() shared by every rack)

Each node does what the cache-tier branch of default.ipxe makes iPXE do (tests/test_scaleout_qemu.py boots
that script in QEMU with the real ROM; this is its model at scale):
1. its script from the server its rack's DHCP names, else the next server (several DHCP servers answer);
2. the header the server put after `#!ipxe`: wwfast-blob1..3, wwfast-server1..3 and the content addresses;
3. kernel, image and system overlay from `${wwfast-blob1}/<digest>` with a progress timeout (`--timeout`,
   no byte for that long); a failure rotates the blob sources (the failed one to the back) and retries the
   same file; `3 * rounds` failures in all fail the attempt (the script's `:failed`, then a new attempt
   after its `sleep 10`, at most `attempts`);
4. the runtime overlay from `${wwfast-server1}`, rotating the servers the same way.
Every body is hashed as it arrives: a blob must hash to its address, the runtime overlay to the manifest's
sha256 for the node in the generation its script named. Each node binds its sockets to its own address.
OUT: {"nodes": [{id, start, end, ok, attempts, failures, generation, fetches: [[stage, url, t0, t1, bytes,
result]]}], "cpu_s": this process's CPU seconds}. While the storm runs, stdout says `bytes N` each time this
rack's nodes have received another MiB (N: the total so far): the runner injects a fault at a point in the
storm's progress, which a slow or fast machine cannot move past the storm's end.
"""
import asyncio
import hashlib
import json
import os
import re
import resource
import sys
import time
import urllib.parse

CHUNK = 1 << 16


class Progress:
    """Bytes this rack's nodes received, reported on stdout every STEP bytes."""
    STEP = 1 << 20

    def __init__(self):
        self.total = self.reported = 0

    def add(self, n):
        self.total += n
        if self.total - self.reported >= self.STEP:
            self.reported = self.total
            print(f"bytes {self.total}", flush=True)


PROGRESS = Progress()
SET = re.compile(rb"^set (wwfast-[a-z0-9-]+) (\S+)$", re.M)


class FetchFailed(Exception):
    pass


async def fetch(url, local_ip, timeout, expect_sha=None, keep=False):
    """GET url (one connection, closed after); returns (body sha256, bytes, body if `keep`). A progress
    timeout: no byte for `timeout` s fails it, as iPXE's --timeout."""
    u = urllib.parse.urlsplit(url)
    target = u.path + (f"?{u.query}" if u.query else "")
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(u.hostname, u.port or 80, local_addr=(local_ip, 0)), timeout)
    except (OSError, asyncio.TimeoutError) as e:
        raise FetchFailed(f"connect: {e.__class__.__name__} {e}") from None
    h = hashlib.sha256()
    got = 0
    kept = []
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nUser-Agent: iPXE/sim\r\n"
                     f"Connection: close\r\n\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(None, 2)[1])
        if status != 200:
            raise FetchFailed(f"HTTP {status}")
        m = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.I)
        length = int(m.group(1)) if m else None
        while True:
            chunk = await asyncio.wait_for(reader.read(CHUNK), timeout)
            if not chunk:
                break
            h.update(chunk)
            got += len(chunk)
            PROGRESS.add(len(chunk))
            if keep:
                kept.append(chunk)
        if length is not None and got != length:
            raise FetchFailed(f"short body {got}/{length}")
    except asyncio.TimeoutError:
        raise FetchFailed(f"no progress for {timeout} s after {got} bytes") from None
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
        raise FetchFailed(f"{e.__class__.__name__} {e}") from None
    finally:
        writer.close()
    digest = h.hexdigest()
    if expect_sha is not None and digest != expect_sha:
        raise FetchFailed(f"sha256 mismatch: got {digest}")
    return digest, got, b"".join(kept) if keep else None


class Node:
    def __init__(self, spec, plan):
        self.id, self.mac, self.ip, self.offset = spec["id"], spec["mac"], spec["ip"], spec["start"]
        self.plan = plan
        self.fetches = []
        self.failures = 0
        self.record = {"id": self.id, "ok": False, "attempts": 0, "generation": ""}

    async def get(self, stage, url, sha=None):
        t0 = time.time()
        try:
            _, n, _ = await fetch(url, self.ip, self.plan["timeout"], sha)
        except FetchFailed as e:
            self.fetches.append([stage, url, t0, time.time(), 0, str(e)])
            return False
        self.fetches.append([stage, url, t0, time.time(), n, "ok"])
        return True

    async def rotate_until(self, stage, sources, path, sha, limit):
        """The script's next_source/next_server loop: the same file from the next source on failure."""
        while not await self.get(stage, f"{sources[0]}/{path}", sha):
            self.failures += 1
            if self.failures >= limit:
                return False
            sources.append(sources.pop(0))
        return True

    async def attempt(self):
        plan = self.plan
        limit = 3 * plan["rounds"]
        self.failures = 0
        servers = list(plan["servers"])
        query = f"assetkey=&uuid={self.id}"
        script = None
        for _ in range(limit):
            t0 = time.time()
            url = f"{servers[0]}/ipxe/{self.mac.replace(':', '-')}?{query}"
            try:
                _, n, body = await fetch(url, self.ip, plan["timeout"], keep=True)
                if not body.startswith(b"#!ipxe\n") or b"set wwfast-blob1 " not in body:
                    raise FetchFailed("not a cache-tier script")
            except FetchFailed as e:
                self.fetches.append(["ipxe", url, t0, time.time(), 0, str(e)])
                servers.append(servers.pop(0))
                continue
            self.fetches.append(["ipxe", url, t0, time.time(), n, "ok"])
            script = body
            break
        if script is None:
            return False
        sets = {}
        for k, v in SET.findall(script):       # the header's (first) values: the body's sets only rotate them
            sets.setdefault(k.decode(), v.decode())
        generation = sets.get("wwfast-generation", "")
        self.record["generation"] = generation
        blobs = [sets[f"wwfast-blob{i}"] for i in (1, 2, 3)]
        for stage in ("kernel", "image", "system"):
            if not await self.rotate_until(stage, blobs, sets[f"wwfast-{stage}"], sets[f"wwfast-{stage}"], limit):
                return False
        runtime_sha = plan["runtime"].get(generation, {}).get(self.id)
        if runtime_sha is None:
            self.fetches.append(["runtime", "", time.time(), time.time(), 0, f"unknown generation {generation}"])
            return False
        servers = [sets[f"wwfast-server{i}"] for i in (1, 2, 3)]
        return await self.rotate_until("runtime", servers, f"runtime/{self.mac}?{query}", runtime_sha, limit)

    async def boot(self, t0):
        await asyncio.sleep(max(0.0, t0 + self.offset - time.time()))
        self.record["start"] = time.time()
        for n in range(1, self.plan["attempts"] + 1):
            self.record["attempts"] = n
            if await self.attempt():
                self.record["ok"] = True
                break
            await asyncio.sleep(self.plan["retry_s"])
        self.record.update(end=time.time(), failures=self.failures, fetches=self.fetches)
        return self.record


async def main_async(plan, t0):
    nodes = [Node(spec, plan) for spec in plan["nodes"]]
    return await asyncio.gather(*(n.boot(t0) for n in nodes))


def main(argv):
    plan_path, out_path = argv
    with open(plan_path) as f:
        plan = json.load(f)
    print("ready", flush=True)
    line = sys.stdin.readline().split()
    t0 = float(line[1])
    records = asyncio.run(main_async(plan, t0))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(out_path + ".tmp", "w") as f:
        json.dump({"nodes": records, "cpu_s": usage.ru_utime + usage.ru_stime}, f)
    os.replace(out_path + ".tmp", out_path)


if __name__ == "__main__":
    main(sys.argv[1:])
