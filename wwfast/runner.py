"""The one stage runner: decide whether a stage is current, say why it reruns, run it under its lock,
record what it ran from in its stamp (written last).

A stage (define, build, compress) declares, Snakemake/DVC style:
  inputs    files it reads; fingerprinted by size + mtime, their sha256 computed only when those moved
  trees     directories it reads (image trees, overlay sources): a stat-only digest of every entry
  settings  the subtree of the settings it reads (a JSON-able dict)
  facts     other cheap facts it reads, by name (the imported images' names, ...)
  code      the modules (or packages) whose source shapes its output
  outputs   what it writes; a missing or changed output is a reason to rerun
  locks     upstream stages whose outputs it reads: their locks are held too, so they cannot change mid-run
  check     the stage's own per-item check against its memory, for inputs too many to list in the stamp
While it runs, a stage may add inputs (`ctx.add_inputs`: files it discovered, stat-only) and outputs
(`ctx.add_outputs`), and keep its per-item incremental memory (per node, per image) in `ctx.memory`,
which the stamp carries to the next run. `housekeeping` runs on every call, current or not.

Stamp: STATE/stages/<stage>.stamp (docs/formats.md); lock: STATE/stages/<stage>.lock.
"""
import dataclasses
import importlib.util
import json
import os
import stat
import time
import hashlib
import contextlib
from typing import Callable

from wwfast import __version__, fsutil, layout

STAMP_FORMAT = 1


@dataclasses.dataclass
class Stage:
    name: str
    run: Callable                                   # run(ctx) -> exit code (0: done)
    inputs: Callable = lambda ctx: []               # -> [path]: hashed when size/mtime moved
    trees: Callable = lambda ctx: []                # -> [directory]: stat-only digest
    settings: Callable = lambda ctx: {}             # -> JSON-able dict
    facts: Callable = lambda ctx: {}                # -> {what: value}: other cheap facts it reads (image names)
    code: tuple = ()                                # module or package names
    outputs: Callable = lambda ctx: []              # -> [path] (a directory: must exist)
    locks: tuple = ()                               # upstream stage names whose lock is held too
    check: Callable = None                          # check(ctx) -> [reasons]: the stage's per-item check
                                                    # against its memory (compress: every build output)
    housekeeping: Callable = None                   # housekeeping(ctx) -> memory changed?, every call, locked
    version: str = "1"                              # bump when the same inputs give other bytes


@dataclasses.dataclass
class Outcome:
    code: int                  # exit code
    ran: bool                  # False: current, the stage's run was not called
    reasons: list              # why it ran (empty when current)
    seconds: float = 0.0
    ctx: object = None         # the Context the stage's functions saw (what housekeeping recorded, ...)


class Context:
    """What a stage's functions see: the directories, the loaded settings, its memory, the log."""

    def __init__(self, stage, conf_dir, state_dir, settings, force, log, memory, params):
        self.stage = stage
        self.conf_dir = os.fspath(conf_dir)
        self.state_dir = os.fspath(state_dir)
        self.settings = settings
        self.force = force
        self.log = log
        self.memory = memory            # the stage's own per-item record, kept in the stamp
        self.params = params            # the stage's extra arguments (not part of the fingerprint)
        self.reasons = []
        self.found_inputs = {}          # path -> stat key (inputs discovered while running)
        self.found_outputs = set()

    def add_inputs(self, paths):
        """Files the run read that the declaration could not name (e.g. server files a template read)."""
        for path in paths:
            self.found_inputs[os.fspath(path)] = _stat_key(path)

    def add_outputs(self, paths):
        self.found_outputs.update(os.fspath(p) for p in paths)


# ---- fingerprints ----

def _stat_key(path):
    """[size, mtime_ns, ctime_ns, inode] or None when missing: a rename or an in-place edit moves it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _same_output(recorded, now):
    """Size, mtime and inode unchanged. Not the ctime: it moves when a later stage hard-links the output
    (compress links build's packed images and kernels into its store, so the disk holds them once)."""
    if recorded is None or now is None or len(recorded) != 4:
        return recorded == now
    return [recorded[0], recorded[1], recorded[3]] == [now[0], now[1], now[3]]


def _file_entry(path, old):
    """[size, mtime_ns, sha256] reusing the recorded hash when size and mtime did not move."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISDIR(st.st_mode):
        return [0, 0, "dir"]
    key = [st.st_size, st.st_mtime_ns]
    if isinstance(old, list) and old[:2] == key:
        return old
    return key + [fsutil.sha256_file(path)]


_TREES = None     # {root: digest} while runner.run decides and runs a stage; None otherwise


def tree_stamp(root):
    """Digest of every entry's path, type, mode, owner, size, mtime and ctime under `root` (no contents):
    a cheap 'did anything change'. Memoised for one run, so a stage that checks the same tree again
    (the image step per image) costs no second walk."""
    root = os.fspath(root)
    if _TREES is not None and root in _TREES:
        return _TREES[root]
    h = hashlib.sha256()
    stack = [root]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                children = sorted(it, key=lambda e: e.name)
        except FileNotFoundError:
            h.update(b"missing\0")
            continue
        for child in children:
            st = child.stat(follow_symlinks=False)
            h.update(f"{child.path}\0{st.st_mode:o}\0{st.st_uid}:{st.st_gid}\0{st.st_size}\0"
                     f"{st.st_mtime_ns}\0{st.st_ctime_ns}\0".encode())
            if stat.S_ISLNK(st.st_mode):
                h.update(os.readlink(child.path).encode(errors="surrogateescape"))
            elif stat.S_ISDIR(st.st_mode):
                stack.append(child.path)
    if _TREES is not None:
        _TREES[root] = h.hexdigest()
    return h.hexdigest()


def code_files(names):
    """Source files of the named modules (a package: every .py/.pyx/.so under it; a path ending in .py:
    that file; a name ending in '?': optional, e.g. a compiled module that may not be built), sorted."""
    files = set()
    for name in names:
        if name.endswith(".py") and os.path.isfile(name):
            files.add(os.path.abspath(name))
            continue
        optional = name.endswith("?")
        spec = importlib.util.find_spec(name.rstrip("?"))
        if spec is None or spec.origin is None:
            if optional:
                continue
            raise ImportError(f"stage code {name!r} not found")
        if spec.submodule_search_locations:
            for directory in spec.submodule_search_locations:
                for base, dirs, names_ in os.walk(directory):
                    dirs[:] = [d for d in dirs if d != "__pycache__"]
                    files.update(os.path.join(base, n) for n in names_ if n.endswith((".py", ".pyx", ".so")))
        else:
            files.add(spec.origin)
    return sorted(files)


def _describe(path, ctx):
    for base in (ctx.state_dir, ctx.conf_dir):
        rel = os.path.relpath(path, base)
        if not rel.startswith(".."):
            return rel
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rel = os.path.relpath(path, here)
    return path if rel.startswith("..") else rel


def _listed(what, paths, ctx):
    names = [_describe(p, ctx) for p in sorted(paths)]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"{len(names)} {what} changed: {shown}"


def fingerprint(stage, ctx, previous):
    """The stamp fields this run starts from (everything but outputs and memory)."""
    old_files = previous.get("files", {})
    old_code = previous.get("code", {})
    inputs = [os.path.abspath(p) for p in stage.inputs(ctx)]
    return {
        "format": STAMP_FORMAT,
        "stage": stage.name,
        "version": f"{__version__}/{stage.version}",
        "settings": _plain(stage.settings(ctx)),
        "facts": _plain(stage.facts(ctx)),
        "code": {p: _file_entry(p, old_code.get(p)) for p in code_files(stage.code)},
        "files": {p: _file_entry(p, old_files.get(p)) for p in inputs},
        "trees": {os.path.abspath(d): tree_stamp(os.path.abspath(d)) for d in stage.trees(ctx)},
        # inputs the last run discovered: checked again as they are now
        "found": {p: _stat_key(p) for p in previous.get("found", {})},
    }


def _add_declared(stage, ctx, now):
    """The declaration again after the run (it may depend on the memory the run wrote): entries the run
    started from are kept as they were, new ones fingerprinted now, dropped ones forgotten."""
    files, trees = now["files"], now["trees"]
    now["files"] = {p: files[p] if p in files else _file_entry(p, None) for p in map(os.path.abspath, stage.inputs(ctx))}
    now["trees"] = {d: trees[d] if d in trees else tree_stamp(d) for d in map(os.path.abspath, stage.trees(ctx))}


def _plain(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def why_rerun(stage, ctx, now, previous):
    """Reasons to run (empty: current)."""
    if not previous:
        return ["no record of a previous run"]
    if previous.get("format") != STAMP_FORMAT or previous.get("version") != now["version"]:
        return ["the stage's version changed"]
    if not previous.get("ok"):
        return ["the previous run did not finish"]
    reasons = []
    old, new = previous.get("settings", {}), now["settings"]
    changed = [f"{k} {old.get(k)!r} -> {new[k]!r}" for k in sorted(new) if old.get(k) != new[k]]
    if changed:
        reasons.append("settings changed: " + ", ".join(changed))
    old, new = previous.get("facts", {}), now["facts"]
    reasons += [f"{k} changed" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    for key, what in (("code", "code file(s)"), ("files", "input(s)"), ("trees", "tree(s)"),
                      ("found", "input(s)")):
        old, new = previous.get(key, {}), now[key]
        if key == "code" or key == "files":   # content decides; the hash was refreshed only if stat moved
            moved = [p for p in set(old) | set(new)
                     if (old.get(p) or [None] * 3)[2:] != (new.get(p) or [None] * 3)[2:]]
        else:
            moved = [p for p in set(old) | set(new) if old.get(p) != new.get(p)]
        if moved:
            reasons.append(_listed(what, moved, ctx))
    missing = [p for p in stage.outputs(ctx) if not os.path.exists(p)]
    if missing:
        reasons.append(f"output {', '.join(_describe(p, ctx) for p in missing)} missing")
    else:
        moved = [p for p, key in previous.get("outputs", {}).items() if not _same_output(key, _stat_key(p))]
        if moved:
            reasons.append(_listed("output(s)", moved, ctx).replace("changed", "changed since the last run"))
    if stage.check is not None:
        reasons += stage.check(ctx)
    return reasons


# ---- the stamp ----

def read_stamp(state_dir, name):
    try:
        with open(layout.stage_stamp(state_dir, name), "rb") as f:
            stamp = json.loads(f.read())
    except (OSError, ValueError):
        return {}
    # a stamp edited by hand or cut short: no record (the stage reruns), never a crash
    fields = ("settings", "facts", "code", "files", "trees", "found", "outputs", "memory")
    if not isinstance(stamp, dict) or not all(isinstance(stamp.get(k, {}), dict) for k in fields):
        return {}
    return stamp


def write_stamp(state_dir, name, stamp):
    fsutil.atomic_write(layout.stage_stamp(state_dir, name),
                        json.dumps(stamp, sort_keys=True, separators=(",", ":")) + "\n")


def _remove_stale_stamp_temps(state_dir, name):
    """The temp file of a stamp a killed run was writing (fsutil's `.NAME.*.tmp`); we hold the lock."""
    directory = layout.stages_dir(state_dir)
    prefix = f".{os.path.basename(layout.stage_stamp(state_dir, name))}."
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(directory):
            if entry.startswith(prefix) and entry.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, entry))


# ---- locks ----

def _holder(path):
    try:
        with open(path) as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def stage_locks(state_dir, names, wait=True, on_wait=None):
    """Hold the locks of `names` in order (one file per stage). Raises fsutil.LockBusy when `wait` is
    false and a run holds one; `on_wait(message)` is called once if we have to wait."""
    with contextlib.ExitStack() as stack:
        for name in names:
            path = layout.stage_lock(state_dir, name)
            try:
                stack.enter_context(fsutil.locked(path, wait=False))
            except fsutil.LockBusy:
                message = f"another {name} run (pid {_holder(path)}) holds {path}"
                if not wait:
                    raise fsutil.LockBusy(message) from None
                if on_wait:
                    on_wait(message + "; waiting for it to finish")
                stack.enter_context(fsutil.locked(path, wait=True, what=f"another {name} run"))
        yield


# ---- the run ----

def run(stage, conf_dir, state_dir, settings, force=False, wait=True, log=print, **params):
    """Run `stage` if anything it depends on changed (or `force`); returns an Outcome.

    Prints `<stage>: current (inputs unchanged)` or `<stage>: running (<reasons>)`. The stamp is written
    after the stage's run returned 0 (marked failed otherwise, so the next run reruns)."""
    global _TREES
    started = time.monotonic()
    _TREES = {}
    try:
        return _run(stage, conf_dir, state_dir, settings, force, wait, log, params, started)
    finally:
        _TREES = None


def _run(stage, conf_dir, state_dir, settings, force, wait, log, params, started):
    names = tuple(stage.locks) + (stage.name,)
    with stage_locks(state_dir, names, wait=wait, on_wait=lambda m: log(f"{stage.name}: {m}")):
        _remove_stale_stamp_temps(state_dir, stage.name)
        previous = read_stamp(state_dir, stage.name)
        ctx = Context(stage, conf_dir, state_dir, settings, force, log, dict(previous.get("memory", {})), params)
        now = fingerprint(stage, ctx, previous)
        reasons = ["forced"] if force else why_rerun(stage, ctx, now, previous)
        ctx.reasons = reasons
        code = 0
        if not reasons:
            log(f"{stage.name}: current (inputs unchanged)")
            tidied = stage.housekeeping is not None and stage.housekeeping(ctx)   # True: memory changed
            if tidied or now["files"] != previous.get("files") or now["code"] != previous.get("code"):
                write_stamp(state_dir, stage.name, dict(previous, files=now["files"], code=now["code"],
                                                        memory=ctx.memory))
        else:
            log(f"{stage.name}: running ({'; '.join(reasons)})")
            failed = True
            try:
                code = stage.run(ctx) or 0
                failed = code != 0
                if not failed and stage.housekeeping is not None:
                    stage.housekeeping(ctx)
            finally:
                now["ok"] = not failed
                _add_declared(stage, ctx, now)   # inputs named by the memory this run wrote (new images)
                now["found"] = ctx.found_inputs if now["ok"] else now["found"]
                outputs = [os.path.abspath(p) for p in stage.outputs(ctx) if os.path.isfile(p)]
                outputs += sorted(ctx.found_outputs)
                now["outputs"] = {p: _stat_key(p) for p in outputs}
                now["memory"] = ctx.memory
                now["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                now["seconds"] = round(time.monotonic() - started, 3)
                write_stamp(state_dir, stage.name, now)      # last: the record of a whole run
    return Outcome(code, bool(reasons), reasons, time.monotonic() - started, ctx)


def partial(stage, conf_dir, state_dir, settings, work, force=False, wait=True, log=print, **params):
    """Part of a stage on demand (`wwfast overlay build` for some nodes): `work(ctx)` runs under the
    stage's lock with its memory, which goes back into the stamp. The stamp's fingerprint is kept: the
    next full run still decides from what the last full run read. Returns what `work` returns."""
    names = tuple(stage.locks) + (stage.name,)
    with stage_locks(state_dir, names, wait=wait, on_wait=lambda m: log(f"{stage.name}: {m}")):
        previous = read_stamp(state_dir, stage.name)
        ctx = Context(stage, conf_dir, state_dir, settings, force, log, dict(previous.get("memory", {})), params)
        result = work(ctx)
        stamp = dict(previous, memory=ctx.memory) if previous else \
            {"format": STAMP_FORMAT, "stage": stage.name, "ok": False, "memory": ctx.memory}
        write_stamp(state_dir, stage.name, stamp)
        return result
