"""Build step 'images': the image archive and kernel of every image a node uses.

For each image named by a node: STATE/build/images/<image>.cpio.zst (and .cpio.gz when the settings
ask for gzip): the rootfs as newc, excludes applied (the image's own etc/warewulf/excludes plus the
settings' 'image excludes'), packed straight into the compressors (wwfast.builder.image_pack): no raw
archive is written, and build.json's "packed" tells the compress stage, which links these files into
its store. <image>.kernel: the default kernel (Warewulf's discovery). What was built from which inputs is kept
per image in the caller's `memory` dict (the build stage's stamp, wwfast.runner). A node whose kernel.version picks another kernel gets
<image>@<version>.kernel. An image whose inputs are unchanged is not rebuilt; otherwise the step
says why it rebuilds.

Fingerprint of an image: its image.json content fingerprint, a stamp of the tree as it is now
(paths, modes, owners, sizes, mtimes and ctimes: catches edits made after the import), the
excludes, the settings this step reads (the encodings and zstd level too), the fixed mtime
(SOURCE_DATE_EPOCH) and the writer and step versions. A repack that gives the same archive keeps the
files in place (and so the store's links to them); a kernel is rewritten only when its bytes change.
"""
import contextlib
import dataclasses
import os
import re
import time

from wwfast import cpio, fsutil, layout, runner
from wwfast.builder import image_pack, images, kernels

STEP_VERSION = 2   # 2: packed straight into zstd/gzip (no raw <image>.cpio)
META_FORMAT = 2   # 2: "cpio" records the packed files, not a raw archive

REASONS = {
    "image": "the image was re-imported (content fingerprint changed)",
    "tree": "the image tree changed since the last build",
    "excludes": "the excludes changed",
    "mtime": "the fixed mtime (SOURCE_DATE_EPOCH) changed",
    "kernels": "the kernels the nodes ask for changed",
    "writer": "the cpio writer changed",
    "packing": "the compression settings changed",
    "step": "the image build step changed",
}


class BuildError(Exception):
    """An image cannot be built for its nodes; the message names the image and the nodes."""


@dataclasses.dataclass
class StepResult:
    """What a build step contributes to build.json: fields per node and top-level keys."""
    nodes: dict = dataclasses.field(default_factory=dict)
    top: dict = dataclasses.field(default_factory=dict)
    errors: list = dataclasses.field(default_factory=list)
    warnings: list = dataclasses.field(default_factory=list)


def out_dir(state_dir):
    return layout.build_images_dir(state_dir)


def _rel(name):
    return f"images/{name}"


def images_used(nodes):
    """{image name: [node ids]} over the nodes that name an image."""
    used = {}
    for node_id in sorted(nodes):
        image = nodes[node_id].image_name
        if image:
            used.setdefault(image, []).append(node_id)
    return used


def _kernel_file(image, kernel, default):
    if kernel.path == default.path:
        return f"{image}.kernel"
    tag = kernel.version or kernel.path.strip("/")
    return f"{image}@{re.sub(r'[^A-Za-z0-9._+-]', '_', tag)}.kernel"


def packing(settings):
    """How images are packed: the encodings (gzip only when the settings ask) and the zstd level."""
    return {"encodings": ["zst", "gz"] if getattr(settings, "gzip", False) else ["zst"],
            "zstd_level": getattr(settings, "zstd_level", 3)}


def fingerprint(state_dir, image, excludes, mtime, wanted_kernels, pack=None):
    info = images.load_info(state_dir, image)
    rootfs = images.image_root(state_dir, image)
    return {
        "image": info.get("fingerprint", ""),
        "tree": runner.tree_stamp(rootfs),   # the same walk the runner made to decide the stage reruns
        "excludes": list(excludes),
        "mtime": mtime,
        "kernels": sorted(wanted_kernels),
        "writer": cpio.WRITER_VERSION,
        "packing": pack or packing(None),
        "step": STEP_VERSION,
    }


def _why(meta, fp, out):
    """None when current, else the reason to rebuild."""
    if not meta:
        return "no previous build"
    if meta.get("format") != META_FORMAT:
        return "no previous build in this format"
    packed = meta.get("cpio", {}).get("packed") or {"?": {"file": None}}
    for name in [p["file"] for p in packed.values()] + list(meta.get("kernel_files", {}).values()):
        if not name or not os.path.isfile(os.path.join(out, name)):
            return f"output {name or '?'} is missing"
    if any(os.path.getsize(os.path.join(out, p["file"])) != p["size"] for p in packed.values()):
        return "the archive on disk is not the one recorded"
    previous = meta.get("fingerprint", {})
    changed = [REASONS.get(k, k) for k in fp if previous.get(k) != fp[k]]
    return ", ".join(changed) if changed else None


def _copy_kernel(src, dest):
    """The kernel into the build, rewritten only when its bytes changed (the store links to it)."""
    with open(src, "rb") as f:
        fsutil.write_if_changed(dest, f.read(), fsync=True)


def _same_archive(out, previous):
    """keep() for image_pack: the new archive is the recorded one, whose files are all in place."""
    def keep(result):
        old = (previous or {}).get("cpio", {})
        if old.get("sha256") != result["sha256"] or set(old.get("packed", {})) != set(result["files"]):
            return False
        return all(old["packed"][enc] == f and os.path.isfile(os.path.join(out, f["file"]))
                   and os.path.getsize(os.path.join(out, f["file"])) == f["size"]
                   for enc, f in result["files"].items())
    return keep


def _remove_leftovers(out, image, keep):
    """A raw archive an earlier version left, and encodings the settings no longer ask for."""
    for name in (f"{image}.cpio", f"{image}.cpio.zst", f"{image}.cpio.gz"):
        if name not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(out, name))


def build_image(state_dir, image, node_ids, nodes, settings_excludes, mtime, force=False, log=print, memory=None,
                pack=None, threads=0):
    """Build one image; returns ({node id: build.json fields}, meta). `memory`: {image: meta} of the
    previous builds, updated in place. `pack`: packing(settings)."""
    pack = pack or packing(None)
    memory = {} if memory is None else memory
    rootfs = images.require_image(state_dir, image)
    out = out_dir(state_dir)
    excludes = list(settings_excludes) + images.read_excludes(rootfs)
    # Which kernel each node boots (a node's kernel.version may pick another one than the default).
    found = kernels.find_kernels(rootfs)
    default = kernels.default_kernel(found)
    if default is None:
        raise BuildError(f"image {image}: no kernel found (looked for {', '.join(kernels.SEARCH_PATTERNS)}); "
                         f"used by {', '.join(node_ids)}")
    node_kernel = {}
    for node_id in node_ids:
        wanted = nodes[node_id].kernel.version.strip()
        try:
            node_kernel[node_id] = kernels.select_kernel(rootfs, wanted) if wanted else default
        except kernels.KernelError as e:
            raise BuildError(f"image {image}, node {node_id}: {e}") from None
    if "gz" not in pack["encodings"] and not all(kernels.reads_zstd(k.version) for k in node_kernel.values()):
        pack = dict(pack, encodings=pack["encodings"] + ["gz"])   # a node's kernel unpacks only gzip
    kernel_files = {}
    for k in [default] + list(node_kernel.values()):
        kernel_files.setdefault(k.path, _kernel_file(image, k, default))
    fp = fingerprint(state_dir, image, excludes, mtime, kernel_files, pack)
    reason = "forced" if force else _why(memory.get(image), fp, out)
    if reason is None:
        log(f"build: image {image}: current (inputs unchanged)")
        meta = memory[image]
    else:
        previous = memory.pop(image, None)   # forgotten until this build finished: never a stale skip
        log(f"build: image {image}: rebuilding ({reason})")
        started = time.monotonic()
        try:
            packed = image_pack.pack_image(rootfs, out, image, encodings=pack["encodings"],
                                           zstd_level=pack["zstd_level"], threads=threads, excludes=excludes,
                                           mtime=mtime, keep=_same_archive(out, previous))
        except image_pack.PackError as e:
            raise BuildError(f"image {image}: {e}") from None
        _remove_leftovers(out, image, {f["file"] for f in packed["files"].values()})
        for path, name in kernel_files.items():
            _copy_kernel(kernels.Kernel(path, rootfs).full_path, os.path.join(out, name))
        entries = packed["entries"]
        meta = {
            "format": META_FORMAT,
            "image": image,
            "fingerprint": fp,
            "cpio": {"file": f"{image}.cpio", "size": packed["size"], "sha256": packed["sha256"],
                     "entries": entries, "packed": packed["files"]},
            "kernel": {"path": default.path, "version": default.version, "file": f"{image}.kernel"},
            "kernel_files": kernel_files,
            "kernel_versions": {path: kernels.Kernel(path, rootfs).version for path in kernel_files},
            "compiled_writer": cpio.COMPILED,
            "seconds": round(time.monotonic() - started, 3),
        }
        memory[image] = meta
        sizes = ", ".join(f"{enc} {f['size']}" for enc, f in packed["files"].items())
        log(f"build: image {image}: {entries} entries, {meta['cpio']['size']} bytes ({sizes}"
            f"{'; same archive, files kept' if packed['kept'] else ''}), kernel "
            f"{default.version or default.path} in {meta['seconds']:.2f} s")
    fields = {}
    for node_id in node_ids:
        k = node_kernel[node_id]
        fields[node_id] = {
            "image": image,
            "image_cpio": _rel(meta["cpio"]["file"]),
            "kernel": _rel(meta["kernel_files"][k.path]),
            "kernel_version": meta["kernel_versions"][k.path],
        }
    return fields, meta


def run_step(state_dir, nodes, settings, force=False, log=print, mtime=None, memory=None):
    """The images step over all nodes: a StepResult (errors are collected, not raised). `memory`:
    {image: what was built from which inputs}, updated in place; images no longer used are dropped."""
    result = StepResult()
    memory = {} if memory is None else memory
    excludes = list(getattr(settings, "image_excludes", []) or [])
    pack, threads = packing(settings), getattr(settings, "threads", 0)
    if mtime is None:
        mtime = cpio.source_date_epoch()
    for node_id in sorted(nodes):
        if not nodes[node_id].image_name:
            result.warnings.append(f"node {node_id} has no image name: it gets no kernel or image and is left "
                                   f"out of build.json")
    os.makedirs(out_dir(state_dir), exist_ok=True)
    for image, node_ids in images_used(nodes).items():
        try:
            fields, meta = build_image(state_dir, image, node_ids, nodes, excludes, mtime, force=force, log=log,
                                       memory=memory, pack=pack, threads=threads)
            result.nodes.update(fields)
            archive = meta["cpio"]
            result.top.setdefault("packed", {})[_rel(archive["file"])] = {
                "size": archive["size"], "sha256": archive["sha256"],
                **{enc: dict(f, file=_rel(f["file"])) for enc, f in archive["packed"].items()}}
        except (BuildError, images.ImageError, kernels.KernelError) as e:
            result.errors.append(str(e) if "node" in str(e) else f"{e} (used by {', '.join(node_ids)})")
    for image in set(memory) - set(images_used(nodes)):
        del memory[image]
    return result
