"""Per-node iPXE scripts: STATE/build/ipxe/<node>.ipxe from the node's `ipxe template`.

Templates: built-in wwfast/data/ipxe/<name>.ipxe, site CONF/ipxe/<name>.ipxe (shadows the built-in one).
They are Jinja2 with StrictUndefined and a small data set, like Warewulf's iPXE templates (reference A6):
id hostname fqdn cluster image ipxe hwaddr ipaddr port authority kernel_args kernel_version root secure
tags netdevs. `unknown.ipxe` is rendered once, for MACs that are no node. A script is rewritten only
when its text changes, so a rebuild touches only the nodes whose scripts differ.
With a cache tier (settings `cluster:`) also cache_tier, transfer_timeout_ms and source_rounds.
"""
import os
import pathlib

import jinja2

from wwfast import fsutil, layout
from wwfast.define.cluster_settings import cache_tier
from wwfast.build.overlay_build import syncfs
from wwfast.errors import ConfigError
from wwfast.records import is_ethernet_mac
from wwfast.build.render import RenderError, node_view, template_line

BUILTIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "data" / "ipxe"
UNKNOWN = "unknown"


def out_dir(state_dir):
    return layout.ipxe_dir(state_dir)


def template_path(conf_dir, name):
    for base in (pathlib.Path(conf_dir) / "ipxe" if conf_dir else None, BUILTIN_DIR):
        if base is not None and (base / f"{name}.ipxe").is_file():
            return base / f"{name}.ipxe"
    raise ConfigError(None, None, "ipxe template",
                      f"iPXE template {name!r} not found in {pathlib.Path(conf_dir) / 'ipxe'} or the built-in ones")


def _authority(address, port):
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def script_data(node, settings):
    """Template data of one node (a records.Node)."""
    view = node_view(node)
    # the address iPXE boots by: an Ethernet one (node.macs puts the primary device's first)
    hwaddr = next((mac for mac in node.macs if is_ethernet_mac(mac)), "")
    return {
        "id": view.id, "hostname": view.id, "fqdn": view.id, "cluster": view.cluster, "image": view.image,
        "ipxe": view.ipxe_template, "hwaddr": hwaddr, "ipaddr": settings.address, "port": settings.http_port,
        "authority": _authority(settings.address, settings.http_port), "kernel_args": view.kernel.args_str,
        "kernel_version": view.kernel.version, "root": view.root, "secure": bool(settings.secure),
        "tags": view.tags, "netdevs": view.netdevs,
        # scale-out (settings `cluster:`): blobs from caches, with failover between sources
        "cache_tier": cache_tier(settings), "transfer_timeout_ms": settings.transfer_timeout * 1000,
        "source_rounds": settings.source_rounds,
    }


def script_environment():
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              trim_blocks=True, lstrip_blocks=True, autoescape=False)


def compile_template(env, path):
    """The template at `path`, compiled under its own file name so that tracebacks (and our messages)
    carry template lines; `.filename` is set. A syntax error is a RenderError naming file and line."""
    try:
        code = env.compile(path.read_text(encoding="utf-8"), name=path.name, filename=str(path))
        t = env.template_class.from_code(env, code, env.make_globals(None))
    except jinja2.TemplateSyntaxError as e:
        raise RenderError(str(path), e.lineno, None, f"template syntax: {e.message}") from None
    t.filename = str(path)
    return t


class IpxeRenderer:
    def __init__(self, conf_dir, settings):
        self.conf_dir = conf_dir
        self.settings = settings
        self.env = script_environment()
        self._templates = {}

    def template(self, name):
        t = self._templates.get(name)
        if t is None:
            t = self._templates[name] = compile_template(self.env, template_path(self.conf_dir, name))
        return t

    def _render(self, name, data, node_id):
        t = self.template(name)
        try:
            return t.render(data)
        except jinja2.TemplateError as e:
            raise RenderError(t.filename, template_line(e, t.filename), node_id, str(e)) from None

    def node_script(self, node):
        return self._render(node.ipxe_template, script_data(node, self.settings), node.id)

    def unknown_script(self):
        data = {"ipaddr": self.settings.address, "port": self.settings.http_port,
                "authority": _authority(self.settings.address, self.settings.http_port),
                "secure": bool(self.settings.secure)}
        return self._render(UNKNOWN, data, None)


def write_if_changed(path, text):
    """Write `text` (str or bytes) atomically unless the file already holds it; True when written."""
    data = text.encode() if isinstance(text, str) else text
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    fsutil.atomic_write(path, data, fsync=False)
    return True


def build_ipxe(conf_dir, state_dir, settings, nodes):
    """Write every node's script and unknown.ipxe; returns (changed node ids, removed file names)."""
    renderer = IpxeRenderer(conf_dir, settings)
    directory = out_dir(state_dir)
    os.makedirs(directory, exist_ok=True)
    changed = []
    with fsutil.locked(os.path.join(directory, ".lock"), what="another iPXE build"):
        for node_id in sorted(nodes):
            if write_if_changed(os.path.join(directory, f"{node_id}.ipxe"), renderer.node_script(nodes[node_id])):
                changed.append(node_id)
        write_if_changed(os.path.join(directory, f"{UNKNOWN}.ipxe"), renderer.unknown_script())
        keep = {f"{n}.ipxe" for n in nodes} | {f"{UNKNOWN}.ipxe", ".lock"}
        removed = sorted(f for f in os.listdir(directory) if f.endswith(".ipxe") and f not in keep)
        for f in removed:
            os.unlink(os.path.join(directory, f))
        if changed:
            syncfs(directory)
    return changed, removed


def run_step(conf_dir, state_dir, nodes, settings, log=print):
    """The build stage's iPXE step: a build_images.StepResult with each node's script and unknown.ipxe."""
    from wwfast.build.image_archives import StepResult
    result = StepResult()
    try:
        changed, removed = build_ipxe(conf_dir, state_dir, settings, nodes)
    except (ConfigError, OSError) as e:
        result.errors.append(str(e))
        return result
    shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
    log(f"build: iPXE scripts: {len(changed)} written{' (' + shown + ')' if changed else ''}, "
        f"{len(nodes) - len(changed)} current{f', {len(removed)} removed' if removed else ''}")
    for node_id in nodes:
        result.nodes[node_id] = {"ipxe": f"ipxe/{node_id}.ipxe"}
    result.top["unknown_ipxe"] = f"ipxe/{UNKNOWN}.ipxe"
    return result
