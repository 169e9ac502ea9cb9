"""IgnitionJson: the node's native disks and filesystems as an Ignition v3 config (reference A6).

Same document as Warewulf's (version "3.1.0", Ignition's field names and order, unset fields left
out), with two of its slips not copied: mount options are the comma-separated options (Warewulf splits
the string into single characters) and startMiB is the partition's start (Warewulf puts its size).
"""
import json


def _int(text, what):
    try:
        return int(str(text))
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None


def _partition(label, p):
    out = {}
    if p.Guid:
        out["guid"] = p.Guid
    out["label"] = label
    if p.Number:
        number = _int(p.Number, f"partition {label} number")
        if number:
            out["number"] = number
    if p.ResizeP is not None:
        out["resize"] = bool(p.ResizeP)
    if p.ShouldExistP is not None:
        out["shouldExist"] = bool(p.ShouldExistP)
    if p.SizeMiB:
        out["sizeMiB"] = _int(p.SizeMiB, f"partition {label} size_mib")
    if p.StartMiB:
        out["startMiB"] = _int(p.StartMiB, f"partition {label} start_mib")
    if p.TypeGuid:
        out["typeGuid"] = p.TypeGuid
    if p.WipePartitionEntryP is not None:
        out["wipePartitionEntry"] = bool(p.WipePartitionEntryP)
    return out


def _filesystem(device, fs):
    out = {"device": device}
    if fs.Format:
        out["format"] = fs.Format
    if fs.Label:
        out["label"] = fs.Label
    if fs.MountOptions:
        out["mountOptions"] = [o for o in fs.MountOptions.split(",") if o]
    if fs.Options:
        out["options"] = list(fs.Options)
    out["path"] = fs.Path
    if fs.Uuid:
        out["uuid"] = fs.Uuid
    if fs.WipeFileSystemP is not None:
        out["wipeFilesystem"] = bool(fs.WipeFileSystemP)
    return out


def ignition_config(node):
    """(config dict, error text or "") for a model.Node."""
    storage = {}
    disks = []
    try:
        for device in sorted(node.Disks):
            disk = node.Disks[device]
            parts = [_partition(label, p) for label, p in disk.Partitions.items()]
            parts.sort(key=lambda p: (p.get("number", 0), "sizeMiB" not in p, p.get("sizeMiB", 0)))
            entry = {"device": device}
            if parts:
                entry["partitions"] = parts
            if disk.WipeTableP is not None:
                entry["wipeTable"] = bool(disk.WipeTableP)
            disks.append(entry)
    except ValueError as e:
        return None, str(e)
    if disks:
        storage["disks"] = disks
    filesystems = [_filesystem(d, node.FileSystems[d]) for d in sorted(node.FileSystems)]
    if filesystems:
        storage["filesystems"] = filesystems
    return {"ignition": {"version": "3.1.0"}, "storage": storage}, ""


def go_marshal(value):
    """encoding/json.Marshal's bytes: no spaces, <, > and & escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def ignition_json(node):
    """The JSON text, "" when the node has no disks and no filesystems, the error text when invalid."""
    if not node.Disks and not node.FileSystems:
        return ""
    config, error = ignition_config(node)
    if config is None:
        return error
    return go_marshal(config)
