"""The typed records crossing stages: the MAC normaliser, nodes.json and manifest round trips, bad input."""
import json

import pytest

from wwfast import records
from wwfast.define import nodefile, nodes
from wwfast.records import Artifact, Manifest, Node, RecordError, is_ethernet_mac, mac_kind, normalise_mac

ETH = "52:54:00:ab:cd:ef"
EUI64 = "02:00:00:00:00:00:00:01"
IB = "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:2a:b3:c1"


@pytest.mark.parametrize("text, expected, kind", [
    ("52-54-00-AB-CD-EF", ETH, "ethernet"),
    (" 52:54:00:ab:cd:ef\n", ETH, "ethernet"),
    (EUI64.upper(), EUI64, "eui64"),
    (IB.replace(":", "-"), IB, "infiniband"),
])
def test_mac_normaliser_accepts_ethernet_eui64_and_infiniband(text, expected, kind):
    assert normalise_mac(text) == expected
    assert mac_kind(expected) == kind
    assert is_ethernet_mac(expected) == (kind == "ethernet")
    assert normalise_mac(text, ethernet_only=True) == (expected if kind == "ethernet" else None)


@pytest.mark.parametrize("text", ["", "52:54:00:ab:cd", "52:54:00:ab:cd:ef:01", "52:54-00:ab:cd:ef",
                                  "5254.00ab.cdef", "zz:54:00:ab:cd:ef", "52:54:00:ab:cd:ef:", None, 525400])
def test_mac_normaliser_refuses_anything_else(text):
    assert normalise_mac(text) is None


def test_define_accepts_an_infiniband_device_and_the_record_tells_it_apart(tmp_path):
    config = nodefile.parse_config(
        "nodes:\n  n1:\n    network devices:\n"
        f"      default: {{hwaddr: \"{ETH}\", ipaddr: 10.0.0.1}}\n"
        f"      ib0: {{type: infiniband, hwaddr: \"{IB.upper()}\", ipaddr: 10.1.0.1}}\n", "nodes.yaml")
    db = nodes.resolve(config)
    nodes.write_db(str(tmp_path), db)
    node = records.read_nodes(str(tmp_path / "define" / "nodes.json"))["n1"]
    assert node.macs == [ETH, IB] and node.addresses == ["10.0.0.1", "10.1.0.1"]
    assert node.primary.name == "default" and node.primary.is_ethernet
    assert not node.network_devices["ib0"].is_ethernet and node.network_devices["ib0"].type == "infiniband"


def test_node_round_trip_is_byte_identical_to_what_define_writes(tmp_path):
    config = nodefile.parse_config(
        "nodeprofiles:\n  p: {image name: img, kernel: {args: [quiet]}, tags: {a: b}}\n"
        "nodes:\n  n[1-3]:\n    profiles: [p]\n    network devices: {eth: {hwaddr: \"52:54:00:00:00:01\"}}\n"
        .replace("n[1-3]", "n1"), "nodes.yaml")
    db = nodes.resolve(config)
    raw = nodes.render_db(db)
    back = records.parse_nodes(raw)
    assert records.render_nodes(back) == raw
    node = back["n1"]
    assert (node.image_name, node.kernel.args, node.init, node.root, node.ipxe_template) == \
        ("img", ("quiet",), "/sbin/init", "initramfs", "default")   # defaults applied once, by define
    with pytest.raises(Exception):
        node.image_name = "other"   # frozen


def test_bad_nodes_json_names_the_field():
    with pytest.raises(RecordError, match="expected"):
        records.parse_nodes(b'{"format": 2, "nodes": {}}', "x.json")
    with pytest.raises(RecordError, match="x.json: node n1: missing or bad field 'kernel'"):
        records.parse_nodes(json.dumps({"format": 1, "nodes": {"n1": {"id": "n1", "profiles": [], "comment": "",
                                                                      "cluster name": ""}}}), "x.json")


SHA = "ab" * 32


def manifest_doc(**node):
    entry = {"macs": [ETH], "addresses": ["10.0.0.1"], "asset_key": "",
             "artifacts": {"kernel": {"raw": {"file": SHA + ".kernel", "size": 3, "sha256": SHA}},
                           "image": {"zst": {"file": SHA + ".cpio.zst", "size": 5, "sha256": SHA}}}}
    entry.update(node)
    return {"format": 1, "generation": "g1", "settings": {"secure": True, "update_interval": 30},
            "nodes": {"n1": entry}}


def test_manifest_round_trip_and_artifact_model():
    doc = manifest_doc()
    m = Manifest.from_json(doc)
    assert m.nodes["n1"].artifacts["image"]["zst"] == Artifact(SHA + ".cpio.zst", 5, SHA)
    assert (m.generation, m.secure, m.update_interval) == ("g1", True, 30)
    assert m.to_json() == doc
    assert set(m.files()) == {SHA + ".kernel", SHA + ".cpio.zst"}


def test_manifest_with_one_odd_node_strict_refuses_lenient_keeps_the_others():
    doc = manifest_doc()
    doc["nodes"]["n2"] = dict(doc["nodes"]["n1"], macs=["not-a-mac"])
    with pytest.raises(RecordError, match=r"nodes.n2.macs: 'not-a-mac' is not a hardware address"):
        Manifest.from_json(doc)
    m = Manifest.from_json(doc, strict=False)
    assert list(m.nodes) == ["n1"] and "not-a-mac" in m.rejected["n2"]


@pytest.mark.parametrize("entry, message", [
    ({"file": "../etc/passwd", "size": 1, "sha256": SHA}, "is not a store file name"),
    ({"file": SHA, "size": -1, "sha256": SHA}, "is not a size"),
    ({"file": SHA, "size": 1, "sha256": "xyz"}, "is not a sha256"),
])
def test_bad_artifact_is_refused_with_its_field(entry, message):
    with pytest.raises(RecordError, match=message):
        Manifest.from_json(manifest_doc(artifacts={"image": {"zst": entry}}))


def test_read_manifest_missing_is_none_and_bad_json_names_the_file(tmp_path):
    assert records.read_manifest(str(tmp_path / "none.json")) is None
    bad = tmp_path / "m.json"
    bad.write_text("{nope")
    with pytest.raises(RecordError, match=f"{bad}: not valid JSON"):
        records.read_manifest(str(bad))
    m = Manifest.from_json(manifest_doc())
    records.write_manifest(str(bad), m)
    assert records.read_manifest(str(bad)) == m
