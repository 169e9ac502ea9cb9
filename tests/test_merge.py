"""Profile merging: one test per rule of Warewulf's node database (reference A1, B1)."""
import textwrap

import pytest

from wwfast import records
from wwfast.define import nodefile, nodes, provenance
from wwfast.errors import ConfigError


def resolve(text, **kw):
    return nodes.resolve(nodefile.parse_config(textwrap.dedent(text), "nodes.yaml"), **kw)


def error_of(text):
    with pytest.raises(ConfigError) as info:
        resolve(text)
    return str(info.value)


def test_registry_file_has_nodeprofiles_and_nodes_and_every_field_present():
    n = resolve("""
        nodeprofiles: {p: {image name: img}}
        nodes: {n1: {profiles: [p]}}
    """)["n1"]
    assert n["image name"] == "img"
    assert set(n) == {"id", "profiles", "comment", "cluster name", "image name", "ipxe template",
                      "system overlay", "runtime overlay", "kernel", "init", "root", "asset key",
                      "discoverable", "primary network", "network devices", "ipmi", "tags", "resources",
                      "disks", "filesystems"}
    assert n["network devices"] == {} and n["primary network"] == ""


def test_node_can_set_every_profile_field():
    n = resolve("""
        nodes:
          n1:
            cluster name: c
            image name: i
            kernel: {version: "6.1", args: [quiet]}
            ipmi: {ipaddr: 10.9.0.1, write: "yes"}
            root: tmpfs
    """)["n1"]
    assert (n["cluster name"], n["image name"], n["kernel"], n["root"]) == ("c", "i", {"version": "6.1", "args": ["quiet"]}, "tmpfs")
    assert n["ipmi"]["ipaddr"] == "10.9.0.1" and n["ipmi"]["write"] is True


def test_nested_profiles_depth_first_parents_first_with_dedup():
    n = resolve("""
        nodeprofiles:
          base: {kernel: {args: [a-base]}}
          net: {profiles: [base], kernel: {args: [a-net]}}
          gpu: {profiles: [base], kernel: {args: [a-gpu]}}
        nodes: {n1: {profiles: [net, gpu], kernel: {args: [a-node]}}}
    """)["n1"]
    assert n["profiles"] == ["base", "net", "gpu"]          # base once (diamond), parents first
    assert n["kernel"]["args"] == ["a-base", "a-net", "a-gpu", "a-node"]


def test_profile_negation_removes_a_profile_pulled_in_by_another():
    n = resolve("""
        nodeprofiles:
          p1: {image name: from-p1, tags: {p1: "yes"}}
          p2: {profiles: [p1], cluster name: c2}
        nodes: {n1: {profiles: [p2, ~p1]}}
    """)["n1"]
    assert n["profiles"] == ["p2"]
    assert n["image name"] == "" and n["tags"] == {} and n["cluster name"] == "c2"


def test_profile_cycle_is_an_error_with_line():
    msg = error_of("""
        nodeprofiles:
          a: {profiles: [b]}
          b:
            profiles: [a]
        nodes: {n1: {profiles: [a]}}
    """)
    assert "profile cycle" in msg
    assert "nodes.yaml:3: nodeprofiles.a.profiles:" in msg or "nodes.yaml:5: nodeprofiles.b.profiles:" in msg


def test_missing_profile_is_an_error_with_line():
    msg = error_of("""
        nodeprofiles: {}
        nodes:
          n1:
            profiles: [nope]
    """)
    assert msg.startswith('nodes.yaml:5: nodes.n1.profiles: profile "nope" does not exist'), msg


def test_scalars_last_profile_wins_and_node_beats_profiles():
    text = """
        nodeprofiles:
          p1: {image name: one, init: /init1, root: tmpfs}
          p2: {image name: two, init: /init2}
        nodes:
          n1: {profiles: [p1, p2]}
          n2: {profiles: [p1, p2], image name: mine}
    """
    n = resolve(text)
    assert (n["n1"]["image name"], n["n1"]["init"], n["n1"]["root"]) == ("two", "/init2", "tmpfs")
    assert n["n2"]["image name"] == "mine"


def test_empty_value_does_not_override():
    n = resolve("""
        nodeprofiles: {p: {image name: img}}
        nodes: {n1: {profiles: [p], image name: ""}}
    """)["n1"]
    assert n["image name"] == "img"


def test_lists_append_in_profile_order_then_node_and_tilde_removes():
    n = resolve("""
        nodeprofiles:
          p1: {system overlay: [wwinit, hosts], runtime overlay: [r1], kernel: {args: [quiet, crashkernel=no]}}
          p2: {system overlay: [hostname], runtime overlay: [r2]}
        nodes:
          n1:
            profiles: [p1, p2]
            system overlay: [~hosts, extra]
            runtime overlay: [r3]
            kernel: {args: [~quiet, console=ttyS0]}
    """)["n1"]
    assert n["system overlay"] == ["wwinit", "hostname", "extra"]
    assert n["runtime overlay"] == ["r1", "r2", "r3"]
    assert n["kernel"]["args"] == ["crashkernel=no", "console=ttyS0"]


def test_maps_merge_by_key():
    n = resolve("""
        nodeprofiles:
          p:
            tags: {a: "1", b: "2"}
            ipmi: {username: admin, tags: {x: "1"}}
            network devices:
              default: {device: eth0, netmask: 255.255.255.0, tags: {DNS1: 1.1.1.1}}
            disks: {/dev/vda: {wipe_table: true}}
            filesystems: {/dev/vda1: {format: ext4}}
        nodes:
          n1:
            profiles: [p]
            tags: {b: "3", c: "4"}
            ipmi: {password: pw, tags: {y: "2"}}
            network devices:
              default: {hwaddr: "AA-BB-CC-DD-EE-01", ipaddr: 10.0.0.1, tags: {DNS2: 8.8.8.8}}
              ib: {device: ib0, type: infiniband}
            disks: {/dev/vda: {partitions: {swap: {number: 1}}}}
            filesystems: {/dev/vda1: {path: /scratch}}
    """)["n1"]
    assert n["tags"] == {"a": "1", "b": "3", "c": "4"}
    assert (n["ipmi"]["username"], n["ipmi"]["password"], n["ipmi"]["tags"]) == ("admin", "pw", {"x": "1", "y": "2"})
    eth = n["network devices"]["default"]
    assert (eth["device"], eth["hwaddr"], eth["ipaddr"], eth["netmask"]) == ("eth0", "aa:bb:cc:dd:ee:01", "10.0.0.1", "255.255.255.0")
    assert eth["tags"] == {"DNS1": "1.1.1.1", "DNS2": "8.8.8.8"}
    assert n["network devices"]["ib"]["type"] == "infiniband"
    assert n["disks"]["/dev/vda"]["wipe_table"] is True
    assert n["disks"]["/dev/vda"]["partitions"]["swap"]["number"] == "1"
    assert (n["filesystems"]["/dev/vda1"]["format"], n["filesystems"]["/dev/vda1"]["path"]) == ("ext4", "/scratch")


def test_resources_deep_merge_appends_lists():
    # Warewulf's own Test_MergeNode "resources": two fstab lists become one.
    n = resolve("""
        nodeprofiles:
          p:
            resources:
              fstab: [{spec: "warewulf:/home", file: /home}]
              sfdisk: {label: gpt, unit: sectors}
        nodes:
          n1:
            profiles: [p]
            resources:
              fstab: [{spec: "warewulf:/opt", file: /opt}]
              sfdisk: {unit: MiB}
    """)["n1"]
    assert [e["file"] for e in n["resources"]["fstab"]] == ["/home", "/opt"]
    assert n["resources"]["sfdisk"] == {"label": "gpt", "unit": "MiB"}


def test_comment_is_not_inherited():
    n = resolve("""
        nodeprofiles: {p: {comment: profile comment}}
        nodes: {n1: {profiles: [p]}, n2: {profiles: [p], comment: mine}}
    """)
    assert n["n1"]["comment"] == "" and n["n2"]["comment"] == "mine"


@pytest.mark.parametrize("primary, expected", [(None, "a"), ("b", "b"), ("nosuch", "a")])
def test_primary_network(primary, expected):
    extra = f"primary network: {primary}" if primary else ""
    n = resolve(f"""
        nodes:
          n1:
            {extra}
            network devices:
              b: {{hwaddr: "52:54:00:00:00:02"}}
              a: {{hwaddr: "52:54:00:00:00:01"}}
    """)["n1"]
    assert n["primary network"] == expected
    assert [k for k, d in n["network devices"].items() if d["primary"]] == [expected]
    assert records.Node.from_json(n).macs[0] == n["network devices"][expected]["hwaddr"]


def test_primary_network_from_profile():
    n = resolve("""
        nodeprofiles: {p: {primary network: b}}
        nodes: {n1: {profiles: [p], network devices: {a: {device: eth0}, b: {device: eth1}}}}
    """)["n1"]
    assert n["primary network"] == "b"


def test_undef_and_unset_sentinels_mean_not_set():
    n = resolve("""
        nodeprofiles: {p: {image name: img, cluster name: c}}
        nodes: {n1: {profiles: [p], image name: UNDEF, cluster name: UNSET, ipmi: {write: undef}}}
    """)["n1"]
    assert n["image name"] == "img" and n["cluster name"] == "c" and n["ipmi"]["write"] is False


@pytest.mark.parametrize("text, value", [('"true"', True), ("yes", True), ("no", False), ("false", False),
                                         ('"FALSE"', False), ("on", True)])
def test_wwbool_values(text, value):
    n = resolve(f"""
        nodes: {{n1: {{discoverable: {text}, network devices: {{d: {{onboot: {text}}}}}}}}}
    """)["n1"]
    assert n["discoverable"] is value and n["network devices"]["d"]["onboot"] is value


def test_wwbool_defaults_and_override():
    n = resolve("""
        nodeprofiles: {p: {network devices: {d: {onboot: "false"}}, ipmi: {write: "true"}}}
        nodes: {n1: {profiles: [p], network devices: {d: {onboot: "true"}, e: {device: eth1}}}}
    """)["n1"]
    assert n["network devices"]["d"]["onboot"] is True    # set on the node: overrides
    assert n["network devices"]["e"]["onboot"] is True    # empty: BoolDefaultTrue
    assert n["ipmi"]["write"] is True and n["discoverable"] is False


def test_bad_wwbool_is_an_error():
    assert 'nodes.yaml:3: nodes.n1.discoverable: "maybe" is not a boolean' in error_of("""
        nodes:
          n1: {discoverable: maybe}
    """)


def test_tags_at_three_levels():
    n = resolve("""
        nodes:
          n1:
            tags: {localtime: UTC, num: 3}
            ipmi: {tags: {bit-rate: "115.2"}}
            network devices: {default: {tags: {DNS1: 1.1.1.1}}}
    """)["n1"]
    assert n["tags"] == {"localtime": "UTC", "num": "3"}
    assert n["ipmi"]["tags"] == {"bit-rate": "115.2"}
    assert n["network devices"]["default"]["tags"] == {"DNS1": "1.1.1.1"}


def test_hostlist_node_keys_expand():
    n = resolve("""
        nodeprofiles: {p: {image name: img}}
        nodes:
          n[01-03]: {profiles: [p]}
          login: {}
    """)
    assert sorted(n) == ["login", "n01", "n02", "n03"]
    assert n["n02"]["image name"] == "img" and n["n02"]["id"] == "n02"


def test_node_defined_twice_by_hostlist_is_an_error():
    assert 'nodes.yaml:4: nodes.n2: node "n2" is defined twice (also by "n[1-3]")' in error_of("""
        nodes:
          n[1-3]: {}
          n2: {}
    """)


def test_field_sources_name_the_profile():
    config = nodefile.parse_config(textwrap.dedent("""
        nodeprofiles:
          base: {init: /sbin/init, tags: {a: "1"}, system overlay: [wwinit]}
          default: {profiles: [base], image name: img, system overlay: [hosts]}
        nodes:
          n1: {profiles: [default], tags: {b: "2"}, system overlay: [extra]}
    """), "nodes.yaml")
    src = provenance.field_sources(config, "n1")
    assert src["init"] == "base" and src["image name"] == "default"
    assert src["tags.a"] == "base" and src["tags.b"] == "node"
    assert src["system overlay"] == "base+default+node"


def test_shared_profile_subtrees_do_not_leak_between_nodes():
    n = resolve("""
        nodeprofiles: {p: {tags: {a: "1"}, network devices: {default: {netmask: 255.255.0.0}}}}
        nodes:
          n1: {profiles: [p], network devices: {default: {ipaddr: 10.0.0.1}}}
          n2: {profiles: [p]}
    """)
    assert n["n1"]["network devices"]["default"]["ipaddr"] == "10.0.0.1"
    assert n["n2"]["network devices"]["default"]["ipaddr"] == ""
