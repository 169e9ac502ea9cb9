"""`wwfast upgrade nodes`: convert a node file from before Warewulf 4.6 as `wwctl upgrade nodes` does,
in place in the YAML so that comments, key order and quoting survive.

Legacy forms converted (reference A1 "Upgrade"): `container name` → `image name`; `kernel args` (a
string), `kernel version`, `kernel override` and kernel.override → kernel.version / kernel.args (a list);
flat `ipmi <field>` keys → ipmi.<field>; `keys:` → tags; `tagsdel:` applied and dropped (also in ipmi and
network devices); `ipxe template: dracut` → `default` + tag IPXEMenuEntry=dracut; network devices'
`default`/`primary: true` → `primary network`, `ipcidr` → ipaddr + netmask, `ip6addr` → ipaddr6,
`prefix` dropped; comma-separated overlay strings → lists; `disabled` and `WW_INTERNAL` dropped.
--replace-overlays splits the old `wwinit` / `generic` overlays; --add-defaults completes the default
profile as Warewulf's does.
"""
import io
import ipaddress

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from wwfast.define.nodeedit import _yaml

# What Warewulf 4.6 split its monolithic overlays into.
WWINIT_SPLIT = ["wwinit", "wwclient", "fstab", "hostname", "ssh.host_keys", "issue", "resolv", "udev.netname",
                "systemd.netname", "ifcfg", "ifupdown", "NetworkManager", "wicked", "ignition"]
GENERIC_SPLIT = ["hosts", "ssh.authorized_keys", "syncuser"]
FLAT_IPMI = ("escapechar", "gateway", "interface", "ipaddr", "netmask", "password", "port", "username", "write")


class Upgrader:
    def __init__(self, add_defaults=False, replace_overlays=False):
        self.add_defaults = add_defaults
        self.replace_overlays = replace_overlays
        self.notes = []

    def note(self, where, text):
        self.notes.append(f"{where}: {text}")

    # ---- the document
    def upgrade(self, data):
        if not isinstance(data, CommentedMap):
            data = CommentedMap()
        if "WW_INTERNAL" in data:
            _drop(data, "WW_INTERNAL")
            self.note("WW_INTERNAL", "obsolete, removed")
        for section in ("nodeprofiles", "nodes"):
            entries = data.get(section)
            if isinstance(entries, CommentedMap):
                for name, entry in entries.items():
                    if isinstance(entry, CommentedMap):
                        self.entity(entry, f"{section}.{name}", node=section == "nodes")
        if self.add_defaults:
            self.defaults(data)
        return data

    def entity(self, e, where, node):
        if "container name" in e:
            _replace(e, "container name", "image name", e["container name"])
            self.note(where, "container name -> image name")
        if "disabled" in e:
            _drop(e, "disabled")
            self.note(where, "disabled: obsolete, removed")
        self.ipmi(e, where)
        self.tags(e, where)
        if e.get("ipxe template") == "dracut":
            tags = e.get("tags")
            if isinstance(tags, CommentedMap) and "IPXEMenuEntry" in tags:
                self.note(where, "ipxe template dracut kept: tag IPXEMenuEntry is already set")
            else:
                e["ipxe template"] = "default"
                if not isinstance(tags, CommentedMap):
                    tags = CommentedMap()
                    _set(e, "tags", tags)
                tags["IPXEMenuEntry"] = "dracut"
                self.note(where, "ipxe template dracut -> default with tag IPXEMenuEntry=dracut")
        self.kernel(e, where)
        devs = e.get("network devices")
        if isinstance(devs, CommentedMap):
            for name, dev in devs.items():
                if isinstance(dev, CommentedMap):
                    self.netdev(e, name, dev, f"{where}.network devices.{name}")
        for field in ("system overlay", "runtime overlay"):
            value = e.get(field)
            if isinstance(value, str):
                e[field] = _flow([v.strip() for v in value.split(",") if v.strip()])
                self.note(where, f"{field}: comma-separated text -> list")
            if self.replace_overlays and isinstance(e.get(field), list):
                old, new = ("wwinit", WWINIT_SPLIT) if field == "system overlay" else ("generic", GENERIC_SPLIT)
                items = list(e[field])
                if old in items:
                    i = items.index(old)
                    items[i:i + 1] = [x for x in new if x == old or x not in items]
                    e[field] = _flow(items)
                    self.note(where, f"{field}: {old} -> {', '.join(new)}")
        fss = e.get("filesystems")
        if isinstance(fss, CommentedMap):
            for fs in fss.values():
                if isinstance(fs, CommentedMap) and isinstance(fs.get("mount_options"), list):
                    fs["mount_options"] = ",".join(str(o) for o in fs["mount_options"])

    def ipmi(self, e, where):
        flat = [f for f in FLAT_IPMI if f"ipmi {f}" in e]
        if not flat:
            return
        ipmi = e.get("ipmi")
        if not isinstance(ipmi, CommentedMap):
            ipmi = CommentedMap()
            e.insert(list(e).index(f"ipmi {flat[0]}"), "ipmi", ipmi)
        for field in flat:
            comment = e.ca.items.pop(f"ipmi {field}", None)
            value = e.pop(f"ipmi {field}")
            if ipmi.get(field) in (None, ""):
                ipmi[field] = value
                if comment is not None:
                    ipmi.ca.items[field] = comment
        self.note(where, f"ipmi {', '.join(flat)} -> ipmi.{{{','.join(flat)}}}")

    def tags(self, e, where):
        keys = e.get("keys")
        if "keys" in e and not isinstance(e.get("tags"), CommentedMap):
            _replace(e, "keys", "tags", CommentedMap())
        elif "keys" in e:
            _drop(e, "keys")
        if isinstance(keys, dict) and keys:
            tags = e["tags"]
            for k, v in keys.items():
                tags.setdefault(k, v)
            self.note(where, "keys -> tags")
        _tagsdel(e, where, self)
        ipmi = e.get("ipmi")
        if isinstance(ipmi, CommentedMap):
            _tagsdel(ipmi, where + ".ipmi", self)

    def kernel(self, e, where):
        kernel = e.get("kernel")
        names = [k for k in ("kernel args", "kernel version", "kernel override") if k in e]
        if not names and not (isinstance(kernel, CommentedMap) and
                              ("override" in kernel or isinstance(kernel.get("args"), str))):
            return
        legacy = {k: e[k] for k in names}
        if not isinstance(kernel, CommentedMap) and names:
            _replace(e, names[0], "kernel", CommentedMap())
            kernel = e["kernel"]
        for k in names:
            if k in e:
                _drop(e, k)
        override = kernel.pop("override", None) or legacy.get("kernel override")
        if "kernel args" in legacy and not kernel.get("args"):
            kernel["args"] = legacy["kernel args"]
        if isinstance(kernel.get("args"), str):
            kernel["args"] = _flow(kernel["args"].split())
        if override and not kernel.get("version"):
            kernel["version"] = _override_version(str(override))
        elif legacy.get("kernel version") and not kernel.get("version"):
            kernel["version"] = legacy["kernel version"]
        self.note(where, f"{', '.join(sorted(legacy)) or 'kernel'} -> kernel.version / kernel.args")

    def netdev(self, e, name, dev, where):
        for flag in ("primary", "default"):
            if flag in dev:
                value = _drop(dev, flag)
                if str(value).lower() in ("true", "yes", "1") and not e.get("primary network"):
                    _set(e, "primary network", name)
                    self.note(where, f"{flag}: true -> primary network: {name}")
        if "prefix" in dev:
            _drop(dev, "prefix")
            self.note(where, "prefix: obsolete, removed")
        if "ipcidr" in dev:
            cidr = dev["ipcidr"]
            try:
                iface = ipaddress.IPv4Interface(str(cidr))
                _replace(dev, "ipcidr", "ipaddr", str(iface.ip))
                if not dev.get("netmask"):
                    dev.insert(list(dev).index("ipaddr") + 1, "netmask", str(iface.netmask))
                self.note(where, "ipcidr -> ipaddr + netmask")
            except ValueError:
                _drop(dev, "ipcidr")
                self.note(where, f"ipcidr {cidr!r} is not a valid CIDR address: dropped")
        if "ip6addr" in dev:
            value = dev["ip6addr"]
            if dev.get("ipaddr6") and dev["ipaddr6"] != value:
                _drop(dev, "ip6addr")
                self.note(where, f"ipaddr6 and ip6addr differ: kept ipaddr6 {dev['ipaddr6']}")
            else:
                dev.pop("ipaddr6", None)
                _replace(dev, "ip6addr", "ipaddr6", value)
                self.note(where, "ip6addr -> ipaddr6")
        _tagsdel(dev, where, self)

    def defaults(self, data):
        profiles = data.get("nodeprofiles")
        if not isinstance(profiles, CommentedMap):
            profiles = CommentedMap()
            _set(data, "nodeprofiles", profiles)
        p = profiles.get("default")
        if not isinstance(p, CommentedMap):
            p = profiles["default"] = CommentedMap()
        if not p.get("system overlay"):
            p["system overlay"] = _flow(WWINIT_SPLIT)
        if not p.get("runtime overlay"):
            p["runtime overlay"] = _flow(GENERIC_SPLIT)
        kernel = p.get("kernel")
        if not isinstance(kernel, CommentedMap):
            kernel = p["kernel"] = CommentedMap()
        if not kernel.get("args"):
            kernel["args"] = _flow(["quiet", "crashkernel=no", "net.ifnames=1"])
        for key, value in (("init", "/sbin/init"), ("root", "initramfs"), ("ipxe template", "default")):
            if not p.get(key):
                p[key] = value
        resources = p.get("resources")
        if not isinstance(resources, CommentedMap):
            resources = p["resources"] = CommentedMap()
        if "fstab" not in resources:
            resources["fstab"] = [
                {"spec": "warewulf:/home", "file": "/home", "vfstype": "nfs", "mntops": "defaults,nofail"},
                {"spec": "warewulf:/opt", "file": "/opt", "vfstype": "nfs", "mntops": "defaults,noauto,nofail,ro"}]
        ipmi = p.get("ipmi")
        if not isinstance(ipmi, CommentedMap):
            ipmi = p["ipmi"] = CommentedMap()
        if not ipmi.get("template"):
            ipmi["template"] = "ipmitool.tmpl"
        nodes = data.get("nodes")
        if isinstance(nodes, CommentedMap):
            for name, n in nodes.items():
                if isinstance(n, CommentedMap) and not n.get("profiles"):
                    n["profiles"] = _flow(["default"])
                    self.note(f"nodes.{name}", "profiles: [default] added")


def _override_version(override):
    """kernel override → kernel.version: a path stays a path; a package-style name becomes its version."""
    if override.startswith("/"):
        return override
    text = override
    for prefix in ("kernel-", "vmlinuz-", "linux-image-"):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return text


def _tagsdel(e, where, upgrader):
    gone = _drop(e, "tagsdel") if "tagsdel" in e else None
    if gone:
        tags = e.get("tags")
        if isinstance(tags, CommentedMap):
            for tag in gone:
                tags.pop(tag, None)
        upgrader.note(where, f"tagsdel {', '.join(map(str, gone))} applied")


def _set(mapping, key, value):
    mapping[key] = value


def _replace(m, old, new, value):
    """Put `new: value` where `old` was, with old's comment; drop old."""
    pos = list(m).index(old)
    comment = m.ca.items.pop(old, None)
    del m[old]
    if new in m:
        if comment is not None and new not in m.ca.items:
            m.ca.items[new] = comment
        return
    m.insert(pos, new, value)
    if comment is not None:
        m.ca.items[new] = comment


def _drop(m, key):
    """Remove `key`, keeping the comments that hung on it (on the key before, or the document top)."""
    keys = list(m)
    pos = keys.index(key)
    comment = m.ca.items.pop(key, None)
    value = m.pop(key)
    if comment is not None:
        token = next((t for t in comment if t is not None and not isinstance(t, list)), None)
        if token is not None:
            text = token.value
            tail = text.split("\n", 1)[1] if "\n" in text else ""  # the whole-line comments after it
            if tail.strip():
                token.value = "\n" + tail if pos else tail
                if pos:
                    m.ca.items.setdefault(keys[pos - 1], [None, None, None, None])[2] = token
                else:
                    m.yaml_set_start_comment("\n".join(line.lstrip("# ") for line in tail.strip().splitlines()))
    return value


def _flow(items):
    seq = CommentedSeq(items)
    seq.fa.set_flow_style()
    return seq


def upgrade_text(text, add_defaults=False, replace_overlays=False):
    """(upgraded text, notes) for the text of a node file."""
    y = _yaml()
    data = y.load(text) if text.strip() else None
    upgrader = Upgrader(add_defaults, replace_overlays)
    data = upgrader.upgrade(data)
    out = io.StringIO()
    y.dump(data, out)
    return out.getvalue(), upgrader.notes
