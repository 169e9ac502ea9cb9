"""Every path under the state directory, in one place (docs/formats.md describes what each holds).

    STATE/define/nodes.json                      the node database (define)
    STATE/images/<image>/rootfs/, image.json     imported images (wwfast image import)
    STATE/ssh/                                   cluster SSH keys, made once (build)
    STATE/build/build.json                       what build produced, per node (build)
    STATE/build/images/<image>.cpio.zst|.gz      image archives, packed straight into the compressors
    STATE/build/overlays/<node>/<context>.cpio   system and runtime overlays
    STATE/build/overlays/.shared/system-<sha>.cpio   secure mode: a system overlay list's part shared by its nodes
    STATE/build/ipxe/<node>.ipxe, unknown.ipxe   iPXE scripts
    STATE/store/<sha256>.<suffix>                content-addressed published files (compress)
    STATE/publish/manifest.json                  node -> artifacts, the commit point (compress)
    STATE/serve/status.json                      node status kept by serve
    STATE/stages/<stage>.stamp, <stage>.lock     the stage runner's record and lock per stage (image changes
                                                 take build's to swap trees)
    STATE/.make-all.lock                         one `make all` / `wwfast all` at a time
"""
import os


def _join(state_dir, *parts):
    return os.path.join(os.fspath(state_dir), *parts)


# ---- define
def define_dir(state_dir):
    return _join(state_dir, "define")


def nodes_json(state_dir):
    return _join(state_dir, "define", "nodes.json")


# ---- imported images (inputs of build)
def images_dir(state_dir):
    return _join(state_dir, "images")


def image_dir(state_dir, image):
    return _join(state_dir, "images", image)


def image_root(state_dir, image):
    return _join(state_dir, "images", image, "rootfs")


def image_info(state_dir, image):
    return _join(state_dir, "images", image, "image.json")


def ssh_dir(state_dir):
    return _join(state_dir, "ssh")


# ---- build
def build_dir(state_dir):
    return _join(state_dir, "build")


def build_json(state_dir):
    return _join(state_dir, "build", "build.json")


def build_lock(state_dir):
    """The build stage's lock (held by a build run); image changes (import, exec, rename, delete) take it
    to swap trees."""
    return stage_lock(state_dir, "build")


def build_images_dir(state_dir):
    return _join(state_dir, "build", "images")


def overlays_dir(state_dir):
    return _join(state_dir, "build", "overlays")


def overlay_archive(state_dir, node_id, context):
    return _join(state_dir, "build", "overlays", node_id, f"{context}.cpio")


def shared_overlays_dir(state_dir):
    """Secure mode's shared system overlay parts (wwfast.builder.overlay_shared); a dot name, so never a node."""
    return _join(state_dir, "build", "overlays", ".shared")


def ipxe_dir(state_dir):
    return _join(state_dir, "build", "ipxe")


def grub_dir(state_dir):
    """Per-node grub.cfg files (warewulf: grubboot)."""
    return _join(state_dir, "build", "grub")


def efiboot_dir(state_dir):
    """Each image's shim and GRUB EFI binaries (warewulf: grubboot)."""
    return _join(state_dir, "build", "efiboot")


def ipxe_script(state_dir, name):
    return _join(state_dir, "build", "ipxe", f"{name}.ipxe")


# ---- compress (publish)
def store_dir(state_dir):
    return _join(state_dir, "store")


def store_file(state_dir, name):
    return _join(state_dir, "store", name)


def publish_dir(state_dir):
    return _join(state_dir, "publish")


def manifest(state_dir):
    return _join(state_dir, "publish", "manifest.json")


def publish_incoming(state_dir):
    """Where a follower server stages the manifest it pulls (several servers, wwfast.cluster)."""
    return _join(state_dir, "publish", "incoming")


# ---- serve
def serve_dir(state_dir):
    return _join(state_dir, "serve")


def status_json(state_dir):
    return _join(state_dir, "serve", "status.json")


# ---- the stage runner
def stages_dir(state_dir):
    return _join(state_dir, "stages")


def stage_stamp(state_dir, stage):
    return _join(state_dir, "stages", f"{stage}.stamp")


def stage_lock(state_dir, stage):
    return _join(state_dir, "stages", f"{stage}.lock")


def all_lock(state_dir):
    return _join(state_dir, ".make-all.lock")
