"""Per-node iPXE scripts: STATE/build/ipxe/<node>.ipxe from the node's `ipxe template`.

Templates: built-in wwfast/data/ipxe/<name>.ipxe, site CONF/ipxe/<name>.ipxe (shadows the built-in one).
wwfast's own are Jinja2 with StrictUndefined and a small data set (id hostname fqdn cluster image ipxe
hwaddr ipaddr port authority kernel_args kernel_version root secure tags netdevs initrd_gzip: true when
the node's kernel predates zstd initrds). A template copied
from a Warewulf server (/etc/warewulf/ipxe/*.ipxe) is in Go's template language with Warewulf's iPXE
data (.Id .Hwaddr .Authority .KernelArgs .NetDevs ..., reference A6) and sprig: a template is taken as
Jinja2 when it uses Jinja2 statements or comments ({% %}, {# #}) or does not parse as a Go template.
`unknown.ipxe` (or a Warewulf site's `unconfigured.ipxe`) is rendered once, for MACs that are no node.
A script is rewritten only when its text changes, so a rebuild touches only the nodes whose scripts
differ.
With a cache tier (settings `cluster:`) also cache_tier, transfer_timeout_ms and source_rounds.
"""
import os
import pathlib

import jinja2

from wwfast import fsutil, layout
from wwfast.define.cluster_settings import cache_tier
from wwfast.builder import fanout
from wwfast.errors import ConfigError
from wwfast.records import is_ethernet_mac
from wwfast.builder.render import RenderError, template_line
from wwfast.builder.template_views import node_view

BUILTIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "data" / "ipxe"
UNKNOWN = "unknown"
WAREWULF_UNKNOWN = "unconfigured"  # Warewulf's name of the script for unknown MACs


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
        "source_rounds": settings.source_rounds, "initrd_gzip": False,
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


def is_go_template(text):
    """A Warewulf (Go) iPXE template, rather than a wwfast (Jinja2) one."""
    from wwfast.builder.gotemplate import Template, TemplateError
    if "{%" in text or "{#" in text:
        return False
    try:
        Template(text)
        return True
    except TemplateError:
        try:
            jinja2.Environment().parse(text)
            return False
        except jinja2.TemplateSyntaxError:
            return True  # neither: report the Go error, the language of the copied templates


class IpxeRenderer:
    def __init__(self, conf_dir, settings, state_dir=None):
        self.conf_dir = conf_dir
        self.settings = settings
        self.state_dir = state_dir
        self.env = script_environment()
        self._templates = {}
        self._raw = None
        self._kernels = {}

    def raw_settings(self):
        if self._raw is None:
            from wwfast.builder.wwtemplate.tstruct import raw_settings
            self._raw = raw_settings(self.settings)
        return self._raw

    def template(self, name):
        t = self._templates.get(name)
        if t is None:
            path = template_path(self.conf_dir, name)
            text = path.read_text(encoding="utf-8")
            if is_go_template(text):
                from wwfast.builder.gotemplate import Template, TemplateError
                try:
                    t = self._templates[name] = Template(text, name=path.name, filename=str(path))
                except TemplateError as e:
                    raise RenderError(str(path), e.line, None, f"template syntax: {e.message}") from None
                return t
            t = self._templates[name] = compile_template(self.env, path)
        return t

    def _render(self, name, data, node_id, go_data=None):
        t = self.template(name)
        if not isinstance(t, jinja2.Template):
            from wwfast.builder.gotemplate import TemplateError
            try:
                return t.execute(go_data())
            except TemplateError as e:
                where = f"executing {e.action}: " if e.action else ""
                raise RenderError(t.filename, e.line, node_id, where + e.message) from None
        try:
            return t.render(data)
        except jinja2.TemplateError as e:
            raise RenderError(t.filename, template_line(e, t.filename), node_id, str(e)) from None

    def kernel_version(self, node):
        """The version of the kernel the node boots (Warewulf's .KernelVersion), "" when unknown."""
        wanted, image = node.kernel.version, node.image_name
        key = (image, wanted)
        if key not in self._kernels:
            self._kernels[key] = ""
            root = layout.image_root(self.state_dir, image) if self.state_dir and image else None
            if root and os.path.isdir(root):
                from wwfast.builder.kernels import KernelError, select_kernel
                try:
                    self._kernels[key] = select_kernel(root, wanted).version or ""
                except (KernelError, OSError):
                    pass
        return self._kernels[key] or wanted

    def node_script(self, node):
        data = script_data(node, self.settings)
        # a kernel before 5.9 cannot unpack zstd: its archives are asked for as gzip
        from wwfast.builder.kernels import reads_zstd
        data["initrd_gzip"] = not reads_zstd(self.kernel_version(node))

        def go_data():
            from wwfast.builder.wwtemplate.tstruct import ipxe_vars
            return ipxe_vars(self.settings, node, data["hwaddr"], self.kernel_version(node), self.raw_settings())
        return self._render(node.ipxe_template, data, node.id, go_data)

    def unknown_script(self):
        data = {"ipaddr": self.settings.address, "port": self.settings.http_port,
                "authority": _authority(self.settings.address, self.settings.http_port),
                "secure": bool(self.settings.secure)}
        name = UNKNOWN
        site = pathlib.Path(self.conf_dir) / "ipxe" if self.conf_dir else None
        if site is not None and not (site / f"{UNKNOWN}.ipxe").is_file() and (site / f"{WAREWULF_UNKNOWN}.ipxe").is_file():
            name = WAREWULF_UNKNOWN

        def go_data():  # rendered once for every unknown MAC: iPXE fills in the address it booted with
            from wwfast.builder.wwtemplate.tstruct import ipxe_vars
            return ipxe_vars(self.settings, None, "${mac}", raw=self.raw_settings())
        return self._render(name, data, None, go_data)


write_if_changed = fsutil.write_if_changed


def build_ipxe(conf_dir, state_dir, settings, nodes):
    """Write every node's script and unknown.ipxe; returns (changed node ids, removed file names). The
    caller holds the build stage's lock."""
    renderer = IpxeRenderer(conf_dir, settings, state_dir)
    directory = out_dir(state_dir)
    os.makedirs(directory, exist_ok=True)
    ids = sorted(nodes)
    for name in {nodes[n].ipxe_template for n in ids}:
        renderer.template(name)   # compiled once, before the fork: every worker inherits it

    def write_scripts(share):
        return [n for n in share
                if write_if_changed(os.path.join(directory, f"{n}.ipxe"), renderer.node_script(nodes[n]))]
    shares = fanout.map_split(write_scripts, ids, fanout.workers_for(len(ids)), errors=WORKER_ERRORS)
    changed = sorted(n for share in shares for n in share)
    unknown = os.path.join(directory, f"{UNKNOWN}.ipxe")
    wrote_unknown = write_if_changed(unknown, renderer.unknown_script())
    keep = {f"{n}.ipxe" for n in nodes} | {f"{UNKNOWN}.ipxe"}
    removed = sorted(f for f in os.listdir(directory) if f.endswith(".ipxe") and f not in keep)
    for f in removed:
        os.unlink(os.path.join(directory, f))
    written = [os.path.join(directory, f"{n}.ipxe") for n in changed] + ([unknown] if wrote_unknown else [])
    fsutil.sync_files(written)   # durable once: an fsync per script for a few nodes, one syncfs for many
    return changed, removed


# Errors a worker hands back to the parent as they are: (class, its constructor arguments).
WORKER_ERRORS = {RenderError: lambda e: (e.template, e.line, e.node, e.message),
                 ConfigError: lambda e: (e.file, e.line, e.field, e.message)}


def run_step(conf_dir, state_dir, nodes, settings, log=print):
    """The build stage's iPXE step: a build_images.StepResult with each node's script and unknown.ipxe."""
    from wwfast.builder.image_archives import StepResult
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
