"""Image lifecycle: change a private copy and swap it in, copy, rename, delete, and who uses an image.

Every operation holds the image's own lock (STATE/images/.<name>.lock: one operation per image at
a time) and swaps or removes trees only under the build stage's lock, so a build never reads a
tree that is being replaced. New trees are made in STATE/images/.<name>.work-* and renamed into
place; a removed tree is first renamed out of the way, then deleted. A crash at any point leaves
either the old image or the new one under the name, never a mix; stale work trees are removed by
the next operation on that image.
"""
import contextlib
import json
import os
import shutil
import subprocess

from wwfast import fsutil, layout, records
from wwfast.builder import images
from wwfast.errors import ConfigError


class Change:
    """A private copy of an image being changed: `rootfs`, `info` (image.json, rewritten on commit);
    set `keep = False` to drop it."""

    def __init__(self, tmp, info):
        self.tmp = tmp
        self.rootfs = os.path.join(tmp, "rootfs")
        self.info = info
        self.keep = True


def copy_tree(src, dest):
    """cp -a (owners, modes, links, devices, xattrs, times) with reflinks where the file system has them."""
    run = subprocess.run(["cp", "-a", "--reflink=auto", "--", src, dest], capture_output=True, text=True)
    if run.returncode != 0:
        raise images.ImageError(f"cannot copy {src}: {run.stderr.strip()}")


@contextlib.contextmanager
def change(state_dir, name, source=None, new=False, log=print):
    """Yield a Change holding a copy of image `source` (default `name`); when the block ends normally
    with keep set, the copy's fingerprint is recomputed and it replaces (or, new=True, becomes)
    image `name`. An exception, a kill, or keep=False leaves every image as it was."""
    images.check_name(name)
    source = source or name
    images.require_image(state_dir, source)
    with contextlib.ExitStack() as stack:
        for locked_name in sorted({name, source}):
            stack.enter_context(images.image_lock(state_dir, locked_name))
        if new and os.path.exists(images.image_dir(state_dir, name)):
            raise images.ImageError(f"image {name!r} already exists")
        info = images.load_info(state_dir, source)
        tmp = images.work_dir(state_dir, name)
        stack.callback(shutil.rmtree, tmp, True)
        ch = Change(tmp, info)
        copy_tree(images.image_root(state_dir, source), ch.rootfs)
        yield ch
        if ch.keep:
            info["name"] = name
            images.write_info(tmp, info)
            images.commit(state_dir, tmp, images.image_dir(state_dir, name), log=log)


def copy(state_dir, source, dest, log=print):
    with change(state_dir, dest, source=source, new=True, log=log) as ch:
        ch.info["copied_from"] = source
        ch.info["changed"] = images.now_utc()
    log(f"image {source} copied to {dest}")


# ---- who uses an image ----------------------------------------------------------------------------

def usage(state_dir, conf_dir):
    """{image: ["node n1", "profile default", ...]}: the node file as written (conf) and the resolved
    nodes of the last define run (STATE/define/nodes.json). A broken node file raises ConfigError."""
    from wwfast.define import nodefile, nodes
    found = {}
    if conf_dir:
        path = nodefile.nodes_file(conf_dir)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                config = nodefile.parse_config(f.read(), path)
            for profile, entry in config.profiles.items():
                if entry.get("image name"):
                    found.setdefault(entry["image name"], set()).add(f"profile {profile}")
            for node_id, node in nodes.resolve(config).items():   # profiles merged, as define does
                if node.get("image name"):
                    found.setdefault(node["image name"], set()).add(f"node {node_id}")
    try:
        resolved = records.read_nodes(layout.nodes_json(state_dir))
    except FileNotFoundError:
        resolved = {}
    for node_id, node in resolved.items():
        if node.image_name:
            found.setdefault(node.image_name, set()).add(f"node {node_id}")
    return {image: sorted(names) for image, names in found.items()}


def users(state_dir, conf_dir, name):
    return usage(state_dir, conf_dir).get(name, [])


# ---- rename and delete ----------------------------------------------------------------------------

def rename(state_dir, conf_dir, old, new, log=print):
    """Rename image `old` to `new` and, as Warewulf does, the nodes and profiles of the node file
    that name it. Returns the entries changed."""
    images.check_name(new)
    images.require_image(state_dir, old)
    with images.image_lock(state_dir, old), images.image_lock(state_dir, new):
        src, dest = images.image_dir(state_dir, old), images.image_dir(state_dir, new)
        if os.path.exists(dest):
            raise images.ImageError(f"image {new!r} already exists")
        info = images.load_info(state_dir, old)
        info["name"] = new
        with images.build_locked(state_dir, log=log):
            os.rename(src, dest)
            fsutil.fsync_dir(images.images_dir(state_dir))
        fsutil.atomic_write(layout.image_info(state_dir, new),
                                   json.dumps(info, sort_keys=True, indent=1) + "\n")
    log(f"image {old} renamed to {new}")
    return _rename_in_node_file(state_dir, conf_dir, old, new, log) if conf_dir else []


def _rename_in_node_file(state_dir, conf_dir, old, new, log):
    from wwfast.builder import inventory
    from wwfast.define import nodeedit, nodefile
    if not os.path.exists(nodefile.nodes_file(conf_dir)):
        return []

    def retarget(doc):
        hits = []
        for section, kind in (("nodeprofiles", "profile"), ("nodes", "node")):
            for key, entry in doc.section(section).items():
                if isinstance(entry, dict) and entry.get("image name") == old:
                    entry["image name"] = new
                    hits.append(f"{kind} {key}")
        return hits

    try:
        hits = nodeedit.edit(conf_dir, retarget, images=inventory.image_names(state_dir))
    except ConfigError as e:
        raise images.ImageError(f"image renamed to {new}, but the node file was not changed: {e}; "
                                f"change 'image name: {old}' by hand") from None
    if hits:
        log(f"node file: image name {old} -> {new} for {', '.join(hits)} (run define/build to apply)")
    return hits


def delete(state_dir, conf_dir, name, force=False, log=print):
    """Remove image `name`; refused while a node or profile names it, unless force."""
    images.require_image(state_dir, name)
    with images.image_lock(state_dir, name):
        used_by = users(state_dir, conf_dir, name)
        if used_by and not force:
            raise images.ImageError(f"image {name} is used by {', '.join(used_by)}; change them first, "
                                    f"or delete it anyway with --force")
        trash = images.work_dir(state_dir, name)
        with images.build_locked(state_dir, log=log):
            os.rename(images.image_dir(state_dir, name), trash)   # replaces the empty temp dir
            fsutil.fsync_dir(images.images_dir(state_dir))
        shutil.rmtree(trash, ignore_errors=True)
    if used_by:
        log(f"warning: image {name} was still used by {', '.join(used_by)}")
    log(f"image {name} deleted")
