"""Which caches a node fetches from: rendezvous (highest-random-weight) hashing.

Each (node, cache) pair gets a pseudo-random score from a hash of both names; a node's caches are the
highest scores. Removing a cache moves only the nodes that had it, spread evenly over the others; no
ring, no virtual nodes. Weighted as in Schindelhauer & Schomaker's logarithmic method: a cache of weight
2 takes twice the nodes. A node pinned to a group (a node tag, e.g. its rack) gets that group's caches
first and the others after them, so it still boots when its whole group is gone.
"""
import hashlib
import math


class Member:
    """A cache (or wwfast server): its name (unique), base URL, group and weight."""
    __slots__ = ("name", "url", "group", "weight")

    def __init__(self, name, url, group="", weight=1.0):
        self.name, self.url, self.group, self.weight = str(name), str(url).rstrip("/"), str(group or ""), \
            float(weight)

    @classmethod
    def from_dict(cls, d):
        return cls(d["name"], d["url"], d.get("group", ""), d.get("weight", 1.0))

    def as_dict(self):
        return {"name": self.name, "url": self.url, "group": self.group, "weight": self.weight}

    def __eq__(self, other):
        return isinstance(other, Member) and self.as_dict() == other.as_dict()

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"Member({self.name!r}, {self.url!r}, group={self.group!r}, weight={self.weight})"


def score(node_id, member):
    """The node's weighted random score for `member` (higher wins)."""
    digest = hashlib.blake2b(f"{node_id}\0{member.name}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 0.5) / 2.0 ** 64           # uniform in (0, 1)
    return member.weight / -math.log(u)


def rank(node_id, members):
    """All `members` ordered for this node, best first (ties broken by name, so the order is total)."""
    return sorted(members, key=lambda m: (-score(node_id, m), m.name))


def choose(node_id, members, group="", k=3):
    """Up to `k` members for the node: those of `group` first (when given), then the rest, each by rank."""
    members = list(members)
    if group:
        pinned = [m for m in members if m.group == group]
        others = [m for m in members if m.group != group]
        return (rank(node_id, pinned) + rank(node_id, others))[:k]
    return rank(node_id, members)[:k]


def bounded_first(node_ids, members, epsilon=0.02):
    """{node id: the name of its first cache}, rendezvous with bounded loads: each node takes its best-ranked
    cache that still has room, a cache's room being (1 + epsilon) x its weighted share of the nodes.

    Plain rendezvous spreads nodes as a multinomial draw (300 nodes on 3 caches: +-8% per cache, one sigma);
    a storm ends when the busiest cache does, so the bound buys balance (within epsilon) at the price of
    moving a few more nodes when a cache comes or goes. Every server computes the same answer from the same
    nodes (the manifest) and members. Nodes are taken in name order."""
    members = list(members)
    if not members:
        return {}
    node_ids = sorted(node_ids)
    total = sum(m.weight for m in members)
    room = {m.name: math.ceil((1 + epsilon) * len(node_ids) * m.weight / total) for m in members}
    out = {}
    for node_id in node_ids:
        for m in rank(node_id, members):
            if room[m.name] > 0:
                room[m.name] -= 1
                out[node_id] = m.name
                break
    return out


def node_group(tags, tag_name):
    """The cache group a node is pinned to: the value of its tag `tag_name` ('' when it has none)."""
    value = (tags or {}).get(tag_name, "") if tag_name else ""
    return str(value or "")
