"""The GRUB boot chain (Warewulf's `warewulf: grubboot`): what serve's /grub and /efiboot routes send.

With grubboot on, the build stage renders each node's grub.cfg (STATE/build/grub/<node>.cfg, from the
built-in wwfast/data/grub/grub.cfg.j2 or CONF/grub/grub.cfg.j2; the iPXE templates' data) and copies
each image's shim and GRUB EFI binaries, found as Warewulf finds them plus Debian's signed paths, to
STATE/build/efiboot/<image>/{shim,grub}.efi. build.json gets `grub`, `shim`, `grubefi` per node (an image
without shim or GRUB is a warning: its nodes get 404 on those files). Off, the step writes nothing and
removes what an earlier grubboot build left.
"""
import glob
import os
import pathlib
import shutil

import jinja2

from wwfast import fsutil
from wwfast.builder import ipxe
from wwfast.layout import efiboot_dir as efi_dir, grub_dir, image_root
from wwfast.builder.render import RenderError, template_line
from wwfast.errors import ConfigError

BUILTIN_TEMPLATE = pathlib.Path(__file__).resolve().parent.parent / "data" / "grub" / "grub.cfg.j2"
# (directory globs, file names) inside the image, searched in this order; the first regular file wins.
SHIM_SEARCH = (("usr/share/efi/*", "usr/lib64/efi", "boot/efi/EFI/*", "usr/lib/shim"),
               ("shim.efi", "shim-sles.efi", "shimx64.efi", "shim-susesigned.efi", "shimx64.efi.signed"))
GRUB_SEARCH = (("usr/lib64/efi", "usr/share/grub2/*-efi", "usr/share/efi/*", "boot/efi/EFI/*",
                "usr/lib/grub/x86_64-efi-signed"),
               ("grub-tpm.efi", "grub.efi", "grubx64.efi", "grubia32.efi", "grubaa64.efi", "grubarm.efi",
                "grubnetx64.efi.signed", "grubx64.efi.signed"))


def find_loader(root, search):
    """The first existing regular file of `search` inside the tree `root` (links resolved inside it)."""
    dirs, names = search
    for pattern in dirs:
        for directory in sorted(glob.glob(os.path.join(glob.escape(root), pattern))):
            for name in names:
                path = fsutil.resolve_in_root(root, os.path.relpath(os.path.join(directory, name), root))
                if os.path.isfile(path):
                    return path
    return None


def template_path(conf_dir):
    site = pathlib.Path(conf_dir) / "grub" / "grub.cfg.j2"
    return site if site.is_file() else BUILTIN_TEMPLATE


def render_configs(conf_dir, state_dir, settings, nodes):
    """Write every node's grub.cfg; returns the ids whose file changed."""
    template = ipxe.compile_template(ipxe.script_environment(), template_path(conf_dir))
    directory = grub_dir(state_dir)
    os.makedirs(directory, exist_ok=True)
    changed = []
    for node_id in sorted(nodes):
        try:
            text = template.render(ipxe.script_data(nodes[node_id], settings))
        except jinja2.TemplateError as e:
            raise RenderError(template.filename, template_line(e, template.filename), node_id, str(e)) from None
        if ipxe.write_if_changed(os.path.join(directory, f"{node_id}.cfg"), text):
            changed.append(node_id)
    for stale in set(os.listdir(directory)) - {f"{n}.cfg" for n in nodes}:
        os.unlink(os.path.join(directory, stale))
    return changed


def copy_loaders(state_dir, images):
    """{image: {"shim": rel, "grubefi": rel}} for what each image has; warnings for what it lacks."""
    found, warnings = {}, []
    for image in sorted(images):
        root = image_root(state_dir, image)
        out = os.path.join(efi_dir(state_dir), image)
        found[image] = {}
        for field, search, name in (("shim", SHIM_SEARCH, "shim.efi"), ("grubefi", GRUB_SEARCH, "grub.efi")):
            source = find_loader(root, search)
            if source is None:
                warnings.append(f"grubboot: image {image} has no {name.split('.')[0]} EFI binary "
                                f"(looked in {', '.join(search[0])}); /efiboot/{name} answers 404 for its nodes")
                continue
            os.makedirs(out, exist_ok=True)
            with open(source, "rb") as f:
                ipxe.write_if_changed(os.path.join(out, name), f.read())
            found[image][field] = f"efiboot/{image}/{name}"
    return found, warnings


def run_step(conf_dir, state_dir, nodes, settings, log=print):
    """The build stage's GRUB step (a StepResult: `grub`, `shim`, `grubefi` per node)."""
    from wwfast.builder.image_archives import StepResult
    result = StepResult()
    if not settings.grubboot:
        for directory in (grub_dir(state_dir), efi_dir(state_dir)):
            shutil.rmtree(directory, ignore_errors=True)
        return result
    try:
        changed = render_configs(conf_dir, state_dir, settings, nodes)
        images = {n.image_name for n in nodes.values() if n.image_name}
        loaders, result.warnings = copy_loaders(state_dir, images)
    except (ConfigError, OSError) as e:
        result.errors.append(str(e))
        return result
    log(f"build: GRUB configurations: {len(changed)} written, {len(nodes) - len(changed)} current; "
        f"shim and GRUB from {sum(1 for v in loaders.values() if v)} of {len(loaders)} image(s)")
    for node_id, node in nodes.items():
        result.nodes[node_id] = {"grub": f"grub/{node_id}.cfg", **loaders.get(node.image_name, {})}
    return result
