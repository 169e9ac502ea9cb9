"""Build step 'images': the image archive and kernel of every image a node uses.

For each image named by a node: STATE/build/images/<image>.cpio (the rootfs as newc, excludes
applied: the image's own etc/warewulf/excludes plus the settings' 'image excludes'),
<image>.kernel (the default kernel, Warewulf's discovery). What was built from which inputs is kept
per image in the caller's `memory` dict (the build stage's stamp, wwfast.runner). A node whose kernel.version picks another kernel gets
<image>@<version>.kernel. An image whose inputs are unchanged is not rebuilt; otherwise the step
says why it rebuilds.

Fingerprint of an image: its image.json content fingerprint, a stamp of the tree as it is now
(paths, modes, owners, sizes, mtimes and ctimes: catches edits made after the import), the
excludes, the settings this step reads, the fixed mtime (SOURCE_DATE_EPOCH) and the writer and
step versions.
"""
import dataclasses
import os
import re
import shutil
import time

from wwfast import cpio, fsutil, layout, runner
from wwfast.build import images, kernels

STEP_VERSION = 1
META_FORMAT = 1

REASONS = {
    "image": "the image was re-imported (content fingerprint changed)",
    "tree": "the image tree changed since the last build",
    "excludes": "the excludes changed",
    "mtime": "the fixed mtime (SOURCE_DATE_EPOCH) changed",
    "kernels": "the kernels the nodes ask for changed",
    "writer": "the cpio writer changed",
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


def fingerprint(state_dir, image, excludes, mtime, wanted_kernels):
    info = images.load_info(state_dir, image)
    rootfs = images.image_root(state_dir, image)
    return {
        "image": info.get("fingerprint", ""),
        "tree": runner.tree_stamp(rootfs),   # the same walk the runner made to decide the stage reruns
        "excludes": list(excludes),
        "mtime": mtime,
        "kernels": sorted(wanted_kernels),
        "writer": cpio.WRITER_VERSION,
        "step": STEP_VERSION,
    }


def _why(meta, fp, out):
    """None when current, else the reason to rebuild."""
    if not meta:
        return "no previous build"
    if meta.get("format") != META_FORMAT:
        return "no previous build in this format"
    for name in [meta.get("cpio", {}).get("file")] + list(meta.get("kernel_files", {}).values()):
        if not name or not os.path.isfile(os.path.join(out, name)):
            return f"output {name or '?'} is missing"
    if os.path.getsize(os.path.join(out, meta["cpio"]["file"])) != meta["cpio"].get("size"):
        return "the archive on disk is not the one recorded"
    previous = meta.get("fingerprint", {})
    changed = [REASONS.get(k, k) for k in fp if previous.get(k) != fp[k]]
    return ", ".join(changed) if changed else None


def _copy_kernel(src, dest):
    with open(src, "rb") as fsrc, fsutil.atomic_file(dest) as fdst:
        shutil.copyfileobj(fsrc, fdst, 1 << 20)


def build_image(state_dir, image, node_ids, nodes, settings_excludes, mtime, force=False, log=print, memory=None):
    """Build one image; returns ({node id: build.json fields}, meta). `memory`: {image: meta} of the
    previous builds, updated in place."""
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
    kernel_files = {}
    for k in [default] + list(node_kernel.values()):
        kernel_files.setdefault(k.path, _kernel_file(image, k, default))
    fp = fingerprint(state_dir, image, excludes, mtime, kernel_files)
    reason = "forced" if force else _why(memory.get(image), fp, out)
    if reason is None:
        log(f"build: image {image}: current (inputs unchanged)")
        meta = memory[image]
    else:
        memory.pop(image, None)   # forgotten until this build finished: never a stale skip
        log(f"build: image {image}: rebuilding ({reason})")
        started = time.monotonic()
        cpio_name = f"{image}.cpio"
        try:
            entries = cpio.pack_tree(rootfs, os.path.join(out, cpio_name), excludes=excludes, mtime=mtime)
        except cpio.CpioError as e:
            raise BuildError(f"image {image}: {e}") from None
        for path, name in kernel_files.items():
            _copy_kernel(kernels.Kernel(path, rootfs).full_path, os.path.join(out, name))
        meta = {
            "format": META_FORMAT,
            "image": image,
            "fingerprint": fp,
            "cpio": {"file": cpio_name, "size": os.path.getsize(os.path.join(out, cpio_name)), "entries": entries},
            "kernel": {"path": default.path, "version": default.version, "file": f"{image}.kernel"},
            "kernel_files": kernel_files,
            "kernel_versions": {path: kernels.Kernel(path, rootfs).version for path in kernel_files},
            "compiled_writer": cpio.COMPILED,
            "seconds": round(time.monotonic() - started, 3),
        }
        memory[image] = meta
        log(f"build: image {image}: {entries} entries, {meta['cpio']['size']} bytes, kernel "
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
    if mtime is None:
        mtime = cpio.source_date_epoch()
    for node_id in sorted(nodes):
        if not nodes[node_id].image_name:
            result.warnings.append(f"node {node_id} has no image name: it gets no kernel or image and is left "
                                   f"out of build.json")
    os.makedirs(out_dir(state_dir), exist_ok=True)
    for image, node_ids in images_used(nodes).items():
        try:
            fields, _meta = build_image(state_dir, image, node_ids, nodes, excludes, mtime, force=force, log=log,
                                        memory=memory)
            result.nodes.update(fields)
        except (BuildError, images.ImageError, kernels.KernelError) as e:
            result.errors.append(str(e) if "node" in str(e) else f"{e} (used by {', '.join(node_ids)})")
    for image in set(memory) - set(images_used(nodes)):
        del memory[image]
    return result
