"""Render and pack every node's system and runtime overlay into STATE/build/overlays/<node>/<context>.cpio.

Unlike Warewulf (reference A5: a temp dir per node, then external cpio and pigz), everything happens in
memory: each template is compiled once, templates that do not look at the node (hosts, ssh keys) are
rendered once for all nodes, and each node's archive is written with the newc writer straight into a
buffer and then atomically into place. Identical archives (a runtime overlay that is the same on every
node) are written once and hard-linked.

Incremental: a fingerprint per node and context covers the node's data, the overlays' files, the
settings, and (only for the templates that use them) all nodes, the node's image and the server files
they include. Nodes whose fingerprints match and whose archives exist are left alone. The fingerprints
live in the caller's `memory` dict (the build stage keeps it in its stamp, wwfast.runner); the caller
holds the build stage's lock.

Outside secure mode a file that the runtime archive carries with the same bytes (e.g. /etc/hosts, which
lists every node) is not repeated in the system archive: the kernel unpacks runtime after system, so the
node's tree is the same, and the total output stays linear in the number of nodes. In secure mode
the node-independent part of the system archive is packed once for all nodes (overlay_shared).
"""
import hashlib
import json
import os
import shutil
import time

from wwfast import cpio, fsutil, layout
from wwfast.builder import fanout, overlay_shared, overlays, sshkeys
from wwfast.builder.overlay_items import (OverlaySource, dedupe_key, drop_sent_by_runtime, file_sig, holds,
                                          item_from_out, link_into_place, pack, same_file)
from wwfast.builder.render import RenderError, Renderer

CONTEXTS = ("system", "runtime")
MEMORY_FORMAT = 1
# Bumped when the bytes produced for the same inputs change (part of every fingerprint).
BUILD_VERSION = 2   # 2: in secure mode the system archive's shared part is its own file
# Fixed mtime: same inputs, same bytes, whatever the checkout time of the overlay files.
MTIME = 0
PARALLEL_MIN_NODES = fanout.MIN_ITEMS


def out_dir(state_dir):
    return layout.overlays_dir(state_dir)


def archive_path(state_dir, node_id, context):
    return layout.overlay_archive(state_dir, node_id, context)


class Result:
    def __init__(self):
        self.rebuilt = []     # node ids whose archives were written
        self.current = []     # node ids left alone
        self.removed = []     # output dirs of nodes no longer defined
        self.reasons = {}     # node id -> why it was rebuilt
        self.server_files = []  # files outside the overlays that the templates read (inputs of the build)
        self.shared = {}      # node id -> its system archive's shared part (secure mode), build-relative
        self.shared_removed = []
        self.seconds = 0.0

    def summary(self):
        text = f"overlays: {len(self.rebuilt)} node(s) rebuilt, {len(self.current)} current"
        if self.removed:
            text += f", {len(self.removed)} removed"
        return text + f" ({self.seconds:.2f} s)"


class OverlayBuilder:
    def __init__(self, conf_dir, state_dir, settings, nodes, workers=None):
        self.conf_dir = os.fspath(conf_dir)
        self.state_dir = os.fspath(state_dir)
        self.settings = settings
        self.nodes = nodes  # {id: records.Node}
        self.workers = workers or os.cpu_count() or 1
        self.renderer = Renderer(settings, nodes, conf_dir, state_dir)
        self.sources = {}
        self.shared_outputs = {}  # template path -> [Item] rendered once for all nodes
        self.deps = set()
        self._next_shared = 0
        self._plans = {}
        self._uses_cache = {}
        self._node_digests = {}
        self._shared_rels = {}    # system overlay list -> its shared part (secure mode), build-relative

    # ------------------------------------------------------------------------------ inputs
    def source(self, name, node_id, context):
        src = self.sources.get(name)
        if src is None:
            try:
                tree = overlays.overlay_tree(self.conf_dir, name)
            except overlays.OverlayError as e:
                raise overlays.OverlayError(f"{e.message}", field=f"node {node_id}: {context} overlay") from None
            src = self.sources[name] = OverlaySource(name, tree)
        return src

    def _shared_id(self):
        self._next_shared += 1
        return self._next_shared

    def plan(self, names, node_id, context):
        """The context's steps in list order: ("item", Item) shared by all nodes, ("template", ...) per node."""
        key = (context, tuple(names))
        cached = self._plans.get(key)
        if cached is not None:
            return cached
        steps = []
        for name in names:
            src = self.source(name, node_id, context)
            for e in src.entries:
                if e.kind != "template":
                    item = src.static[e.rel]
                    if item.shared_id is None:
                        item.shared_id = self._shared_id()
                    steps.append(("item", item))
                    continue
                compiled = self.renderer.compile(e.source)
                if compiled.per_node:
                    steps.append(("template", (e, name, compiled)))
                else:
                    for item in self.shared_render(e, name):
                        steps.append(("item", item))
        self._plans[key] = steps
        return steps

    def shared_render(self, entry, overlay_name):
        items = self.shared_outputs.get(entry.source)
        if items is None:
            outs, deps = self.renderer.render(entry.source, entry.rel, None, overlay_name, entry.mode, entry.uid,
                                              entry.gid)
            self.deps |= deps
            items = self.shared_outputs[entry.source] = [item_from_out(o, self._shared_id()) for o in outs]
        return items

    def uses(self, names, node_id, context):
        """What the context's archive depends on beyond the node and the overlay files.

        Returns (shared digest, all_nodes, image, server_files). Templates that do not look at the node
        (hosts, ssh keys) are rendered here once and their *output* goes into the digest: changing a node's
        tag does not rebuild every node for the sake of /etc/hosts, changing its address does. The flags
        are for the per-node templates: whether they read all nodes, the image, or server files.
        """
        h = hashlib.sha256()
        for kind, step in self.plan(names, node_id, context):
            if kind == "item" and step.shared_id is not None:
                h.update(f"{step.rel}\0{step.mode}\0{step.uid}\0{step.gid}\0{step.target}\0".encode())
                h.update(hashlib.sha256(step.data or b"").digest())
        all_nodes = image = server_files = False
        for name in names:
            for e in self.source(name, node_id, context).entries:
                if e.kind == "template":
                    c = self.renderer.compile(e.source)
                    if not c.per_node:
                        continue
                    all_nodes |= c.uses_all_nodes
                    image |= c.uses_image or "include_from" in c.names
                    server_files |= bool(c.names & {"include", "include_block", "import_link", "readlink"})
        return h.hexdigest(), all_nodes, image, server_files

    # ------------------------------------------------------------------------------ fingerprints
    def fingerprints(self, previous_server_files):
        settings_digest = getattr(self.settings, "digest", "") or repr(sorted(vars(self.settings).items()))
        all_nodes_digest = None  # only when a per-node template reads all_nodes (rare: hosts is shared)
        files_digest = hashlib.sha256(json.dumps(
            {p: file_sig(p) for p in sorted(previous_server_files)}).encode()).hexdigest()
        base = f"{BUILD_VERSION}\0{cpio.WRITER_VERSION}\0{settings_digest}\0{self.conf_dir}\0{self.state_dir}\0"
        uses_cache = self._uses_cache
        image_digests = {}
        node_digests = self._node_digests   # kept for the second call after a build read new server files
        out = {}
        for node_id, node in self.nodes.items():
            node_digest = node_digests.get(node_id)
            if node_digest is None:
                node_digest = node_digests[node_id] = hashlib.sha256(
                    json.dumps(node.to_json(), sort_keys=True).encode()).hexdigest()
            fps = {}
            for context in CONTEXTS:
                names = _overlay_list(node, context)
                if (context, names) not in uses_cache:
                    uses_cache[(context, names)] = self.uses(names, node_id, context)
                shared, all_nodes, image, server_files = uses_cache[(context, names)]
                h = hashlib.sha256((base + context + "\0" + node_digest + "\0" + shared).encode())
                for name in names:
                    h.update(self.source(name, node_id, context).digest.encode())
                if all_nodes:
                    if all_nodes_digest is None:
                        all_nodes_digest = hashlib.sha256(json.dumps(
                            {n: v.to_json() for n, v in self.nodes.items()}, sort_keys=True).encode()).hexdigest()
                    h.update(b"all\0" + all_nodes_digest.encode())
                if image:
                    name = node.image_name
                    if name not in image_digests:
                        image_digests[name] = _image_digest(self.state_dir, name)
                    h.update(b"image\0" + image_digests[name].encode())
                if server_files:
                    h.update(b"files\0" + files_digest.encode())
                fps[context] = h.hexdigest()
            if not self.settings.secure:  # the system archive leaves out what the runtime one sends
                fps["system"] = hashlib.sha256((fps["system"] + fps["runtime"]).encode()).hexdigest()
            out[node_id] = fps
        return out

    # ------------------------------------------------------------------------------ packing
    def node_items(self, node_id, context):
        node = self.nodes[node_id]
        names = _overlay_list(node, context)
        view = self.renderer.nodes[node_id]
        merged = {}
        for kind, step in self.plan(names, node_id, context):
            if kind == "item":
                merged[step.rel] = step
            else:
                entry, overlay_name, _ = step
                outs, deps = self.renderer.render(entry.source, entry.rel, view, overlay_name, entry.mode,
                                                  entry.uid, entry.gid)
                self.deps |= deps
                for o in outs:
                    merged[o.rel] = item_from_out(o)
        return merged

    def build_nodes(self, node_ids):
        """Write the archives of `node_ids`; returns the set of server files the templates read."""
        written = {}  # dedupe key -> path written in this run (hard-linked for identical archives)
        for node_id in node_ids:
            runtime = self.node_items(node_id, "runtime")
            system = self.node_items(node_id, "system")
            whole = None
            if not self.settings.secure:
                drop_sent_by_runtime(system, runtime)
            else:   # the shared part is its own archive (overlay_shared); parents keep their modes
                whole, system = system, overlay_shared.own_items(system)
            for context, merged in (("system", system), ("runtime", runtime)):
                key = dedupe_key(context, merged)
                path = archive_path(self.state_dir, node_id, context)
                first = written.get(key)
                if first is not None and (same_file(first, path) or link_into_place(first, path)):
                    continue
                data = pack(merged, dirs=whole if context == "system" else None, mtime=MTIME)
                if not holds(path, data):   # the same bytes in place (--force, or a change it does not show)
                    fsutil.atomic_write(path, data, fsync=False)   # stay: no inode freed and allocated again
                written[key] = path
        return self.deps

    # ------------------------------------------------------------------------------ the whole build
    def run(self, force=False, log=None, only=None, memory=None):
        """Build what changed; `only` (a set of node ids) limits the build to those nodes, the others
        keep their archives and recorded fingerprints. `memory`: the previous run's record (a dict,
        updated in place; None: no record, every node is built)."""
        started = time.monotonic()
        result = Result()
        memory = {} if memory is None else memory
        os.makedirs(out_dir(self.state_dir), exist_ok=True)
        if any(n in node.system_overlay + node.runtime_overlay
               for node in self.nodes.values() for n in ("ssh.host_keys", "ssh.authorized_keys")):
            made = sshkeys.ensure_keys(self.state_dir)
            if made and log:
                log(f"build: overlays: generated ssh keys {', '.join(made)} in {sshkeys.ssh_dir(self.state_dir)}")
        previous = memory if memory.get("format") == MEMORY_FORMAT else {}
        prev_nodes = dict(previous.get("nodes", {}))
        prev_files = previous.get("server_files", [])
        fps = self.with_shared(self.fingerprints(prev_files))
        todo = []
        skipped = set(self.nodes) - set(only) if only is not None else set()
        for node_id in sorted(self.nodes):
            if node_id in skipped:
                continue
            why = _why_rebuild(self.state_dir, node_id, fps[node_id], prev_nodes.get(node_id), force)
            if why:
                todo.append(node_id)
                result.reasons[node_id] = why
            else:
                result.current.append(node_id)
        if todo:
            # Forget what is about to be rewritten: a run that dies half way never leaves a record
            # that matches an archive it did not finish.
            rewriting = set(todo)
            memory["nodes"] = {n: v for n, v in prev_nodes.items() if n not in rewriting}
            # Shared parts first, in this process, so forked workers inherit them.
            for node_id in todo:
                for context in CONTEXTS:
                    self.plan(_overlay_list(self.nodes[node_id], context), node_id, context)
            deps = self._build_parallel(todo) if len(todo) >= PARALLEL_MIN_NODES and self.workers > 1 \
                else self.build_nodes(todo)
            # durable once: an fsync per archive for a few nodes, one syncfs for many
            fsutil.sync_files([archive_path(self.state_dir, n, c) for n in todo for c in CONTEXTS],
                              dirs=[out_dir(self.state_dir)])
        else:
            deps = set()
        result.rebuilt = todo
        for stale in sorted(set(os.listdir(out_dir(self.state_dir))) - set(self.nodes)):
            path = os.path.join(out_dir(self.state_dir), stale)
            if os.path.isdir(path) and not stale.startswith("."):
                shutil.rmtree(path)
                result.removed.append(stale)
        files = sorted({d for d in deps | set(prev_files) if isinstance(d, str)})
        if files != sorted(prev_files):
            fps = self.with_shared(self.fingerprints(files))  # as the next run will, over the files read now
        for node_id in skipped:  # not built now: keep what the last build recorded (none: built next time)
            if node_id in prev_nodes:
                fps[node_id] = prev_nodes[node_id]
            else:
                fps.pop(node_id, None)
        kept = {fp["system_shared"] for fp in fps.values() if fp.get("system_shared")}
        result.shared_removed = overlay_shared.remove_unused(self.state_dir, kept)
        result.shared = {n: fp["system_shared"] for n, fp in fps.items() if fp.get("system_shared")}
        memory.clear()
        memory.update({"format": MEMORY_FORMAT, "nodes": fps, "server_files": files})
        result.server_files = files
        result.seconds = time.monotonic() - started
        return result

    def with_shared(self, fps):
        """In secure mode: pack each system overlay list's shared part (overlay_shared) and name it in the
        fingerprints of the nodes using it (the "system" fingerprint already covers its content)."""
        if not self.settings.secure:
            return fps
        written = self._shared_rels   # packed once per run, though the fingerprints may be made twice
        for node_id, node in self.nodes.items():
            names = _overlay_list(node, "system")
            if names not in written:
                items = overlay_shared.shared_items(self.plan(names, node_id, "system"))
                written[names] = overlay_shared.write_shared(self.state_dir, items, MTIME)
            fps[node_id]["system_shared"] = written[names]
        return fps

    def _build_parallel(self, todo):
        deps = set()
        for worker_deps in fanout.map_split(self.build_nodes, todo, self.workers, errors=WORKER_ERRORS):
            deps |= worker_deps
        return deps


# Errors a worker hands back to the parent as they are: (class, its constructor arguments).
WORKER_ERRORS = {
    RenderError: lambda e: (e.template, e.line, e.node, e.message),
    overlays.OverlayError: lambda e: (e.message, e.file, e.field),
}


def _overlay_list(node, context):
    return node.system_overlay if context == "system" else node.runtime_overlay


def _image_digest(state_dir, image):
    path = layout.image_info(state_dir, image)
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return "no image.json"


def _why_rebuild(state_dir, node_id, fps, previous, force):
    if force:
        return "forced"
    for context in CONTEXTS:
        if not os.path.exists(archive_path(state_dir, node_id, context)):
            return "no archive yet"
    if previous is None:
        return "new node"
    changed = [c for c in CONTEXTS if previous.get(c) != fps[c]]
    if changed:
        return f"{'/'.join(changed)} inputs changed"
    return None


def build_overlays(conf_dir, state_dir, settings, nodes, force=False, workers=None, log=None, only=None,
                   memory=None):
    """Build the overlays of every node in `nodes` ({id: node}), or of the ids in `only`; returns a
    Result (rebuilt/current lists). `memory`: see OverlayBuilder.run."""
    builder = OverlayBuilder(conf_dir, state_dir, settings, nodes, workers=workers)
    return builder.run(force=force, log=log, only=only, memory=memory)


def run_step(conf_dir, state_dir, nodes, settings, force=False, log=print, memory=None, add_inputs=None):
    """The build stage's overlays step: a build_images.StepResult with system/runtime paths per node.
    `add_inputs(paths)` is told the server files the templates read."""
    from wwfast.builder.image_archives import StepResult
    result = StepResult()
    try:
        built = build_overlays(conf_dir, state_dir, settings, nodes, force=force, log=log, memory=memory)
        if add_inputs is not None:
            add_inputs(built.server_files)
    except (RenderError, overlays.OverlayError, OSError, RuntimeError) as e:
        result.errors.append(str(e))
        return result
    if built.rebuilt:
        shown = ", ".join(f"{n} ({built.reasons[n]})" for n in built.rebuilt[:5])
        more = f" and {len(built.rebuilt) - 5} more" if len(built.rebuilt) > 5 else ""
        log(f"build: overlays rebuilt for {shown}{more}")
    log(f"build: {built.summary()}")
    for node_id in nodes:
        result.nodes[node_id] = {context: f"overlays/{node_id}/{context}.cpio" for context in CONTEXTS}
        if node_id in built.shared:   # the node's system archive is this shared part, then its own
            result.nodes[node_id]["system_shared"] = built.shared[node_id]
    return result
