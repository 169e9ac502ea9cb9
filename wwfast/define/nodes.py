"""The node database: the node file's entries merged with their profiles, validated, written as nodes.json.

Public API (docs/formats.md):
    resolve(config, images=None, overlays=None, warnings=None) -> {id: node}   merged, canonical, validated
    define(conf_dir, images=None, overlays=None, warnings=None) -> {id: node}   read + resolve; the file must exist
    write_db(state_dir, nodes), render_db(nodes) -> bytes   (read it back with wwfast.records.read_nodes)
Reading the node file is wwfast.define.nodefile (read_config, parse_config); where each field came
from (`node list --all`) is wwfast.define.provenance.

A resolved node is the JSON form of wwfast.records.Node (every field present, defaults applied here
and nowhere else). The names of images and overlays to check are handed in by the caller: the model
knows nothing of images or overlays.
"""
from wwfast import layout, records
from wwfast.errors import ConfigError, raise_all
from wwfast.define.merge import ProfileError, clean_list, expand_profiles, merge
from wwfast.define.nodefile import gc_paused, read_config
from wwfast.define.schema import NODE, PROFILE, did_you_mean

DB_FORMAT = records.NODES_FORMAT
MAX_ERRORS = 50

# Filled in when nothing sets them (Warewulf's defaults, kept with the record).
DEFAULT_IPXE_TEMPLATE = records.DEFAULT_IPXE_TEMPLATE
DEFAULT_INIT = records.DEFAULT_INIT
DEFAULT_ROOT = records.DEFAULT_ROOT
DEFAULT_NETDEV_TYPE = records.DEFAULT_NETDEV_TYPE


def db_path(state_dir):
    return layout.nodes_json(state_dir)


class _Errors:
    """Distinct errors, capped: a bad profile must not print once per node."""

    def __init__(self):
        self.items = {}
        self.more = 0

    def add(self, error):
        key = str(error)
        if key in self.items:
            return
        if len(self.items) >= MAX_ERRORS:
            self.more += 1
            return
        self.items[key] = error

    def raise_if_any(self):
        errors = list(self.items.values())
        if self.more:
            last = errors[-1]
            errors.append(ConfigError(last.file, None, "", f"... and {self.more} more problems"))
        raise_all(errors)


def profile_lists(config):
    return {name: partial.get("profiles", []) for name, partial in config.profiles.items()}


def _profile_error(config, errors, e, node_id=None):
    if len(e.chain) >= 2:  # found inside a profile's own profiles list
        errors.add(config.error(("nodeprofiles", e.chain[-2], "profiles"), str(e)))
    elif node_id is not None:
        errors.add(config.error(("nodes", config.node_keys[node_id], "profiles"), str(e)))


def resolve(config, images=None, overlays=None, warnings=None):
    """Every node with its profiles merged, as nodes.json holds them (sorted by id).

    `images` / `overlays`: the names that exist (None: don't check). Raises
    ConfigError(s) naming file, line and field; `warnings` (a list) receives
    notes such as Warewulf overlays left out.
    """
    warnings = [] if warnings is None else warnings
    warnings.extend(getattr(config, "warnings", ()))
    with gc_paused():
        return _resolve(config, images, overlays, warnings)


def _resolve(config, images, overlays, warnings):
    errors = _Errors()
    lists = profile_lists(config)
    for name in config.profiles:  # a cycle or missing parent is an error even if no node uses it
        try:
            expand_profiles([name], lists)
        except ProfileError as e:
            _profile_error(config, errors, e)
    merged_profiles = {}  # expanded profile tuple -> merged partial
    expanded_of = {}      # a node's own profiles tuple -> expanded list
    nodes = {}
    shared = _Shared()
    for node_id in sorted(config.nodes):
        partial = config.nodes[node_id]
        own = tuple(partial.get("profiles", ()))
        expanded = expanded_of.get(own)
        if expanded is None:
            try:
                expanded = expanded_of[own] = tuple(expand_profiles(own, lists))
            except ProfileError as e:
                _profile_error(config, errors, e, node_id)
                continue
        base = merged_profiles.get(expanded)
        if base is None:
            base = {}
            for name in expanded:
                base = merge(base, config.profiles[name], PROFILE)
            base = merged_profiles[expanded] = {k: v for k, v in base.items() if k not in ("comment", "profiles")}
        nodes[node_id] = finalize(node_id, merge(base, partial, NODE), expanded, partial.get("comment", ""), shared)
    errors.raise_if_any()
    _check_unique(config, nodes, expanded_of, errors)
    _check_names(config, nodes, expanded_of, images, overlays, errors, warnings)
    errors.raise_if_any()
    return nodes


def _expanded(config, node_id, expanded_of):
    return expanded_of[tuple(config.nodes[node_id].get("profiles", ()))]


def _check_unique(config, nodes, expanded_of, errors):
    macs, addresses = {}, {}
    for node_id, node in nodes.items():
        for net, dev in node["network devices"].items():
            for field, seen, what in (("hwaddr", macs, "MAC"), ("ipaddr", addresses, "IP address")):
                value = dev[field]
                if not value:
                    continue
                if value in seen:
                    other = seen[value]
                    keys = config.where(node_id, _expanded(config, node_id, expanded_of),
                                        ("network devices", net, field))
                    errors.add(config.error(keys, f'{what} {value} of node {node_id} is already used by '
                                                  f'{other[0]} (network {other[1]})'))
                else:
                    seen[value] = (node_id, net)


# Warewulf overlay names wwfast does not ship as overlays: `host` is rendered onto the Warewulf server
# itself (wwfast configures no host services) and `generic` is the pre-4.6 name of hosts +
# ssh.authorized_keys + syncuser. A node file naming one has it left out with a warning.
WAREWULF_OVERLAYS = {
    "host": "the server's own overlay, not sent to nodes",
    "generic": "split by Warewulf 4.6 into hosts, ssh.authorized_keys and syncuser: run `wwfast upgrade nodes`",
}


def _check_names(config, nodes, expanded_of, images, overlays, errors, warnings):
    skipped = {}
    known_lists = set()   # ids of overlay lists whose every name exists (the lists live as long as `nodes`)
    for node_id, node in nodes.items():
        image = node["image name"]
        if images is not None and image and image not in images:
            keys = config.where(node_id, _expanded(config, node_id, expanded_of), ("image name",))
            known = ", ".join(sorted(images)) or "none imported"
            errors.add(config.error(keys, f'unknown image "{image}" (images: {known})'
                                          f'{did_you_mean(image, images)}'))
        if overlays is None:
            continue
        for field in ("system overlay", "runtime overlay"):
            items = node[field]
            if id(items) in known_lists:   # inherited lists are shared by many nodes: checked once
                continue
            if all(name in overlays for name in items):
                known_lists.add(id(items))
                continue
            for name in items:
                if name in overlays:
                    continue
                keys = config.where(node_id, _expanded(config, node_id, expanded_of), (field,), item=name)
                if name in WAREWULF_OVERLAYS:
                    skipped.setdefault(name, config.error(
                        keys, f'Warewulf overlay "{name}" left out: {WAREWULF_OVERLAYS[name]}'))
                else:
                    errors.add(config.error(keys, f'unknown overlay "{name}"{did_you_mean(name, overlays)}'))
    if skipped:
        warnings.extend(str(w) for w in skipped.values())
        kept = {}  # id(list) -> (list, filtered): inherited lists are shared, filter each once
        for node in nodes.values():
            for field in ("system overlay", "runtime overlay"):
                items = node[field]
                hit = kept.get(id(items))
                if hit is None:
                    hit = kept[id(items)] = (items, [i for i in items if i not in skipped])
                node[field] = hit[1]


def _netdev(dev):
    return {
        "device": dev.get("device", ""), "hwaddr": dev.get("hwaddr", ""), "ipaddr": dev.get("ipaddr", ""),
        "netmask": dev.get("netmask", ""), "gateway": dev.get("gateway", ""),
        "ipaddr6": dev.get("ipaddr6", ""), "prefixlen6": dev.get("prefixlen6", ""),
        "gateway6": dev.get("gateway6", ""), "mtu": dev.get("mtu", ""),
        "type": dev.get("type") or DEFAULT_NETDEV_TYPE, "onboot": dev.get("onboot", True),
        "primary": False, "tags": dev.get("tags", {}),
    }


def _ipmi(ipmi):
    return {
        "username": ipmi.get("username", ""), "password": ipmi.get("password", ""),
        "ipaddr": ipmi.get("ipaddr", ""), "netmask": ipmi.get("netmask", ""),
        "gateway": ipmi.get("gateway", ""), "port": ipmi.get("port", ""),
        "interface": ipmi.get("interface", ""), "escapechar": ipmi.get("escapechar", ""),
        "write": ipmi.get("write", False), "template": ipmi.get("template", ""), "tags": ipmi.get("tags", {}),
    }


def _disks(disks):
    out = {}
    for name, disk in disks.items():
        parts = {}
        for label, p in disk.get("partitions", {}).items():
            parts[label] = {
                "number": p.get("number", ""), "size_mib": p.get("size_mib", ""),
                "start_mib": p.get("start_mib", ""), "type_guid": p.get("type_guid", ""),
                "guid": p.get("guid", ""), "wipe_partition_entry": p.get("wipe_partition_entry", False),
                "should_exist": p.get("should_exist", False), "resize": p.get("resize", False),
            }
        out[name] = {"wipe_table": disk.get("wipe_table", False), "partitions": parts}
    return out


def _filesystems(filesystems):
    return {
        name: {
            "format": fs.get("format", ""), "path": fs.get("path", ""),
            "wipe_filesystem": fs.get("wipe_filesystem", False), "label": fs.get("label", ""),
            "uuid": fs.get("uuid", ""), "options": fs.get("options", []),
            "mount_options": fs.get("mount_options", []),
        }
        for name, fs in filesystems.items()
    }


_EMPTY = {}


class _Shared:
    """Finalised sub-structures keyed by their source object, so nodes that inherit
    the same `ipmi`, `kernel`, ... share one result (and canonjson encodes it once).
    The source is kept referenced so its id cannot be reused while cached."""

    def __init__(self):
        self.cache = {}

    def get(self, build, source):
        key = (build, id(source))
        hit = self.cache.get(key)
        if hit is None:
            hit = self.cache[key] = (source, build(source))
        return hit[1]


def _kernel(kernel):
    return {"version": kernel.get("version", ""), "args": clean_list(kernel.get("args", []))}


def finalize(node_id, m, expanded, comment, shared=None):
    """A merged partial → the full canonical node of nodes.json."""
    shared = shared or _Shared()
    netdevs = {name: _netdev(dev) for name, dev in m.get("network devices", _EMPTY).items()}
    primary = m.get("primary network", "")
    if primary not in netdevs:  # Warewulf: unset or unknown → the lexically first netdev
        primary = min(netdevs) if netdevs else ""
    if primary:
        netdevs[primary]["primary"] = True
    return {
        "id": node_id,
        "profiles": list(expanded),
        "comment": comment,
        "cluster name": m.get("cluster name", ""),
        "image name": m.get("image name", ""),
        "ipxe template": m.get("ipxe template") or DEFAULT_IPXE_TEMPLATE,
        "system overlay": shared.get(clean_list, m.get("system overlay", [])),
        "runtime overlay": shared.get(clean_list, m.get("runtime overlay", [])),
        "kernel": shared.get(_kernel, m.get("kernel", _EMPTY)),
        "init": m.get("init") or DEFAULT_INIT,
        "root": m.get("root") or DEFAULT_ROOT,
        "asset key": m.get("asset key", ""),
        "discoverable": m.get("discoverable", False),
        "primary network": primary,
        "network devices": netdevs,
        "ipmi": shared.get(_ipmi, m.get("ipmi", _EMPTY)),
        "tags": m.get("tags", _EMPTY),
        "resources": m.get("resources", _EMPTY),
        "disks": shared.get(_disks, m.get("disks", _EMPTY)),
        "filesystems": shared.get(_filesystems, m.get("filesystems", _EMPTY)),
    }


def define(conf_dir, images=None, overlays=None, warnings=None):
    """Read (the node file must exist), merge and validate; image and overlay names are checked
    against `images` / `overlays` (None: not checked)."""
    return resolve(read_config(conf_dir, require=True), images, overlays, warnings)


# ---- nodes.json ----

def render_db(nodes):
    """Canonical bytes of nodes.json: sorted keys, 1-space indent, trailing newline."""
    with gc_paused():
        return records.render_nodes(nodes)


def write_db(state_dir, nodes):
    path = db_path(state_dir)
    with gc_paused():
        records.write_nodes(path, nodes)
    return path
