"""Hostlist expressions as Warewulf reads them (A1 "Hostlist syntax")."""
import pytest
from hypothesis import given, settings, strategies as st

from wwfast.define import hostlist


@pytest.mark.parametrize("text, expected", [
    ("n1", ["n1"]),
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n[01-03,05]", ["n01", "n02", "n03", "n05"]),
    ("n[001-002,105]", ["n001", "n002", "n105"]),
    ("n[8-11]", ["n8", "n9", "n10", "n11"]),
    ("n[098-101]", ["n098", "n099", "n100", "n101"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("a,b[1-2],c", ["a", "b1", "b2", "c"]),
    ("n[1-2]-ib", ["n1-ib", "n2-ib"]),
    ("n[3,1-2]", ["n3", "n1", "n2"]),
    ("n1,n1,n[1-2]", ["n1", "n2"]),
])
def test_expand(text, expected):
    assert hostlist.expand(text) == expected


@pytest.mark.parametrize("bad", ["n[1-", "n1]", "n[[1]]", "n[a-b]", "n[3-1]", "n[]", "a,,b", "", "n[1-99999999]"])
def test_expand_rejects(bad):
    with pytest.raises(hostlist.HostlistError):
        hostlist.expand(bad)


def test_expand_all_keeps_order_and_dedups():
    assert hostlist.expand_all(["n[2-3]", "n1", "n2"]) == ["n2", "n3", "n1"]


@pytest.mark.parametrize("names, expected", [
    (hostlist.expand("n[001-100,105]"), "n[001-100,105]"),
    (["n1", "n2", "n3", "n5", "n10"], "n[1-3,5,10]"),
    (["login", "n2", "n1"], "login,n[1-2]"),
    (["n5"], "n5"),
    (["r1n1", "r1n2", "r2n1"], "r1n[1-2],r2n1"),
])
def test_compress(names, expected):
    assert hostlist.compress(names) == expected


names = st.lists(st.builds(lambda p, n, w: p + str(n).zfill(w),
                           st.sampled_from(["n", "node", "r1n", "gpu-"]),
                           st.integers(0, 1200), st.sampled_from([0, 2, 3, 4])), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(names)
def test_compress_round_trips(sample):
    assert sorted(hostlist.expand(hostlist.compress(sample))) == sorted(set(sample))
