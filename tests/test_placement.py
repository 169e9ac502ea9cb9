"""Rendezvous hashing of nodes over caches, the script header a server prepends, the cache-tier script
the build renders, and the `cluster:` settings block."""
import collections
import pathlib

import pytest

from helpers.overlay_fixtures import fixture_nodes, fixture_settings
from wwfast.builder.ipxe import build_ipxe, out_dir
from wwfast.cluster.placement import Member, choose, node_group, rank
from wwfast.cluster.sources import blob_sources, header, inject, server_order
from wwfast.define.settings import parse_settings
from wwfast.errors import ConfigError

CACHES = [Member(f"c{i}", f"http://10.1.0.{i}:9874") for i in range(1, 4)]
NODES = [f"n{i:05d}" for i in range(3000)]


def test_balance_within_ten_percent_and_top_three_distinct():
    firsts = collections.Counter(choose(n, CACHES)[0].name for n in NODES)
    mean = len(NODES) / len(CACHES)
    assert all(abs(c - mean) <= 0.1 * mean for c in firsts.values()), firsts
    for n in NODES[:200]:
        assert len({m.name for m in choose(n, CACHES)}) == 3


def test_removing_a_cache_moves_only_its_nodes_evenly():
    before = {n: choose(n, CACHES, k=1)[0].name for n in NODES}
    survivors = [m for m in CACHES if m.name != "c2"]
    after = {n: choose(n, survivors, k=1)[0].name for n in NODES}
    moved = [n for n in NODES if before[n] != after[n]]
    assert set(moved) == {n for n in NODES if before[n] == "c2"}
    # each displaced node goes to its own second choice, which is spread evenly over the survivors
    spread = collections.Counter(after[n] for n in moved)
    assert abs(spread["c1"] - spread["c3"]) <= 0.2 * len(moved), spread
    assert all(after[n] == choose(n, CACHES)[1].name for n in moved)


def test_weights_and_order_are_deterministic():
    heavy = [Member("big", "http://b:1", weight=2.0), Member("small", "http://s:1")]
    firsts = collections.Counter(rank(n, heavy)[0].name for n in NODES)
    assert 1.8 <= firsts["big"] / firsts["small"] <= 2.2, firsts
    assert [m.name for m in rank("n1", CACHES)] == [m.name for m in rank("n1", list(reversed(CACHES)))]


def test_group_pinning_puts_the_group_first_and_keeps_fallbacks():
    grouped = [Member("a1", "http://a1:1", "rackA"), Member("a2", "http://a2:1", "rackA"),
               Member("b1", "http://b1:1", "rackB"), Member("b2", "http://b2:1", "rackB")]
    for n in NODES[:300]:
        chosen = choose(n, grouped, group="rackB")
        assert {m.name for m in chosen[:2]} == {"b1", "b2"} and chosen[2].group == "rackA"
    assert node_group({"cachegroup": "rackB", "other": "x"}, "cachegroup") == "rackB"
    assert node_group({}, "cachegroup") == "" and node_group({"rack": "r1"}, "") == ""
    # a group with no live cache: the node still gets three others
    assert len(choose("n1", grouped[:2], group="rackB")) == 2


class _Art:
    def __init__(self, sha):
        self.sha256 = sha


class _Node:
    def artifact(self, stage):
        return {"kernel": _Art("a" * 64), "image": _Art("b" * 64), "system": _Art("c" * 64)}.get(stage)


def test_sources_fill_three_slots_with_servers_after_caches():
    servers = [Member("s1", "http://10.1.0.1:9873"), Member("s2", "http://10.1.0.2:9873")]
    three = blob_sources("n1", "", CACHES, servers)
    assert sorted(three) == sorted(m.url + "/blob/sha256" for m in CACHES)
    one = blob_sources("n1", "", CACHES[:1], servers)
    assert one[0] == CACHES[0].url + "/blob/sha256" and {u.split("/blob")[0] for u in one[1:]} == \
        {s.url for s in servers}
    alone = blob_sources("n1", "", [], servers[:1])
    assert alone == [servers[0].url + "/blob/sha256"] * 3
    order = server_order("n1", "http://10.1.0.2:9873", servers)
    assert order == ["http://10.1.0.2:9873", "http://10.1.0.1:9873", "http://10.1.0.2:9873"]


def test_header_goes_after_the_first_line():
    text = header(_Node(), ["http://c/blob/sha256"] * 3, ["http://s:1"] * 3, generation="g1")
    assert "set wwfast-kernel " + "a" * 64 in text and "set wwfast-blob3 http://c/blob/sha256" in text
    out = inject(b"#!ipxe\necho hi\n", text).decode()
    assert out.startswith("#!ipxe\nset wwfast-blob1 ") and out.endswith("set wwfast-generation g1\necho hi\n")


def _cluster_settings(secure=False, block=None):
    s = fixture_settings(secure=secure)
    s.caches = [{"name": "c1", "url": "http://10.1.0.1:9874", "group": "", "weight": 1.0}]
    s.transfer_timeout, s.source_rounds = 7, 2
    return s


@pytest.mark.parametrize("secure", [False, True])
def test_cache_tier_script(tmp_path, secure):
    state = tmp_path / "state"
    build_ipxe(tmp_path / "conf", state, _cluster_settings(secure), fixture_nodes())
    text = (pathlib.Path(out_dir(state)) / "n-twonics.ipxe").read_text()
    mac = "52:54:00:00:00:02"
    assert "set timeout 7000" in text and "set base ${wwfast-server1}" in text
    assert (f"kernel --timeout ${{timeout}} --name kernel ${{wwfast-blob1}}/${{wwfast-kernel}} initrd=image "
            f"initrd=system{'' if secure else ' initrd=runtime'} wwid={mac}") in text
    assert "initrd --timeout ${timeout} --name image ${wwfast-blob1}/${wwfast-image} || goto next_source" in text
    assert "initrd --name image ${wwfast-blob1}/${wwfast-image} || goto next_source" in text   # last round
    assert ("initrd --timeout ${timeout} --name runtime ${base}/runtime/" in text) != secure
    assert "iseq ${failures} 6 && goto failed ||" in text and "iseq ${failures} 3 && set plain 1 ||" in text
    assert "/kernel/" not in text and "/image/" not in text


SETTINGS_OK = """\
warewulf: {port: 9873}
cluster:
  etcd: [http://10.1.0.1:2379, "http://10.1.0.2:2379"]
  etcd prefix: /site-a
  lease ttl: 4
  server name: svc1
  server url: http://10.1.0.1:9873
  caches:
    - http://10.1.0.1:9874
    - http://10.1.0.2:9874 rackB
    - {url: "http://[fd00::3]:9874", group: rackC, weight: 2, name: c3}
  cache group tag: rack
  transfer timeout: 5
  source rounds: 2
  boot records: false
"""


def test_cluster_settings_parse():
    s = parse_settings(SETTINGS_OK, "wwfast.yaml")
    assert s.etcd_endpoints == ["http://10.1.0.1:2379", "http://10.1.0.2:2379"]
    assert s.etcd_prefix == "/site-a/" and s.lease_ttl == 4 and s.server_name == "svc1"
    assert s.caches[1] == {"name": "10.1.0.2:9874", "url": "http://10.1.0.2:9874", "group": "rackB", "weight": 1.0}
    assert s.caches[2]["weight"] == 2.0 and s.cache_group_tag == "rack" and s.boot_records is False
    default = parse_settings("warewulf: {port: 9873}\n", "wwfast.yaml")
    assert default.etcd_endpoints == [] and default.caches == [] and default.lease_ttl == 5


@pytest.mark.parametrize("text, line, field, message", [
    ("cluster:\n  etcd: [http://a:1, ftp://b:2]\n", 2, "cluster.etcd.1", "expected http://HOST:PORT"),
    ("cluster:\n  etcd: http://a\n", 2, "cluster.etcd", "give the port"),
    ("cluster:\n  lease tll: 5\n", 2, "cluster.lease tll", 'did you mean "lease ttl"'),
    ("cluster:\n  lease ttl: 1\n", 2, "cluster.lease ttl", "2..600"),
    ("cluster:\n  caches:\n    - http://a:1\n    - http://a:1\n", 4, "cluster.caches.1", "listed twice"),
    ("cluster:\n  caches:\n    - {url: http://a:1, wieght: 2}\n", 3, "cluster.caches.0", 'unknown key "wieght"'),
    ("cluster:\n  caches:\n    - http://a:1 g extra\n", 3, "cluster.caches.0", "URL GROUP"),
    ("cluster:\n  server name: 'a b'\n", 2, "cluster.server name", "is not a name"),
    ("cluster: [1]\n", 1, "cluster", "must be a mapping"),
])
def test_cluster_settings_errors_name_file_line_field(text, line, field, message):
    with pytest.raises(ConfigError) as e:
        parse_settings(text, "conf/wwfast.yaml")
    err = e.value.errors[0] if hasattr(e.value, "errors") else e.value
    assert (err.file, err.line, err.field) == ("conf/wwfast.yaml", line, field) and message in err.message, str(err)


def test_bounded_loads_balance_within_epsilon_and_keep_most_first_choices():
    from collections import Counter
    from wwfast.cluster.placement import bounded_first
    members = [Member(f"c{i}", f"http://c{i}:9874") for i in range(3)]
    ids = [f"n{i:05d}" for i in range(300)]
    first = bounded_first(ids, members)
    counts = Counter(first.values())
    assert max(counts.values()) <= 102 and min(counts.values()) >= 96      # (1 + 0.02) x 100 at most
    assert sum(1 for n in ids if rank(n, members)[0].name != first[n]) < 30
    assert bounded_first(list(reversed(ids)), members) == first            # the same on every server
    # weights: a cache of weight 2 takes twice the nodes
    heavy = members[:2] + [Member("c2", "http://c2:9874", weight=2)]
    counts = Counter(bounded_first(ids, heavy).values())
    assert abs(counts["c2"] - 150) <= 3 and abs(counts["c0"] - 75) <= 6
    # the node's sources start with its bounded choice, the rest in rank order
    node = next(n for n in ids if rank(n, members)[0].name != first[n])
    got = blob_sources(node, "", members, [], first=first[node])
    assert got[0] == f"http://{first[node]}:9874/blob/sha256" and len(set(got)) == 3
