"""What nodes may name: the imported images and the overlays (built-in and site).

The define stage and node edits hand these to the node model, which checks names against them but
knows nothing of images or overlays itself. None means "none exist yet": names are not checked then,
so a node file can be written before the first image is imported.
"""
from wwfast.builder.images import list_images
from wwfast.builder.overlays import list_overlays


def image_names(state_dir):
    """Sorted names of the imported images, or None before the first import."""
    return sorted(list_images(state_dir)) or None


def overlay_names(conf_dir):
    """Sorted overlay names (built-in and site), or None when there are none."""
    return sorted(list_overlays(conf_dir)) or None
