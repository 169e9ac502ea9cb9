"""What nodes may name: the imported images and the overlays (built-in and site).

The define stage and node edits hand these to the node model, which checks names against them but
knows nothing of images or overlays itself. None means "none exist yet": names are not checked then,
so a node file can be written before the first image is imported.
"""
import os

from wwfast import layout
from wwfast.builder.overlays import list_overlays


def list_images(state_dir):
    """Names of the complete images (rootfs/ and image.json present), sorted. Here rather than in
    wwfast.builder.images so the define stage does not import the image tooling to list names."""
    try:
        names = os.listdir(layout.images_dir(state_dir))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if not n.startswith(".")
                  and os.path.isdir(layout.image_root(state_dir, n))
                  and os.path.isfile(layout.image_info(state_dir, n)))


def image_names(state_dir):
    """Sorted names of the imported images, or None before the first import."""
    return list_images(state_dir) or None


def overlay_names(conf_dir):
    """Sorted overlay names (built-in and site), or None when there are none."""
    return sorted(list_overlays(conf_dir)) or None
