"""Network namespaces for boot storms: one switch, server hosts, and racks of simulated nodes.

    shape = LinkShape(rate="10gbit", loss=2.0, delay_ms=0.2)
    with Topology(f"wws{os.getpid()}", nodes=1000, racks=1, servers=1, server_link=shape) as topo:
        topo.exec_args(topo.server_ns(0))      # prefix to run a command on server 0
        topo.server_addresses(0)               # its addresses (a list: a host may carry several)
        topo.rack_of(i), topo.node_address(i)  # where node i lives, and its own IP address

Layout (nothing leaves these namespaces; `close()` deletes them all, which takes their links along):
- `<tag>sw`: the switch, a bridge `br0` (no netfilter on bridged frames: a switch runs no iptables).
  Every host hangs off it by a veth pair (`eth0` inside the
  host, `s<i>`/`r<k>` on the bridge), all on 198.19.0.0/24.
- `<tag>s<i>`: server i, 198.19.0.<1+i> (plus any extra addresses asked for), with a route to each
  rack's node prefix through that rack's gateway address. A server thus talks to one neighbour per
  rack, not to thousands of node addresses (whose ARP entries would overflow the neighbour table).
- `<tag>r<k>`: rack k, gateway 198.19.0.<101+k>, and every node's address as a /32 on its eth0, out
  of 198.18.<16k>.0/20 (up to 4,094 nodes per rack, 16 racks). The load generator binds each node's
  sockets to its own address, so servers see every node as a distinct host.
Link shapes: on a server link (both directions: the server's eth0 and its bridge port) and,
separately, on every rack link: a `tbf` rate cap (e.g. 1gbit, 10gbit), with a `netem` child for
delay. Loss is dropped by the receiver (iptables `statistic` in raw PREROUTING: the server drops
that share of what comes from the nodes, each rack of what comes from the servers), which needs no
netem (some kernels lack it) and is silent to the sender as a lost packet is. With loss, GSO is
limited to one segment on the senders so a lost packet is one packet, not a 64 KB burst.
Namespace names carry a per-run tag (the pid), so several runs on one machine never collide.
"""
import ipaddress
import subprocess

SWITCH_NET = ipaddress.ip_network("198.19.0.0/24")
NODE_SPACE = ipaddress.ip_network("198.18.0.0/16")
RACK_PREFIX = 20
MAX_RACKS = 2 ** (RACK_PREFIX - NODE_SPACE.prefixlen)
PER_RACK = 2 ** (32 - RACK_PREFIX) - 2
TCP_COUNTERS = ("TcpRetransSegs", "TcpExtTCPTimeouts", "TcpExtTCPMemoryPressures", "TcpExtTCPRcvQDrop",
                "TcpExtPruneCalled", "TcpExtTCPOFODrop", "TcpExtListenDrops", "TcpExtListenOverflows",
                "TcpExtTCPSynRetrans", "TcpAttemptFails", "TcpEstabResets", "UdpRcvbufErrors", "UdpSndbufErrors")


class LinkShape:
    """What a link does to packets: rate (tc rate, e.g. '10gbit'), loss (%), delay (ms, one way)."""

    def __init__(self, rate=None, loss=0.0, delay_ms=0.0):
        self.rate, self.loss, self.delay_ms = rate, float(loss or 0), float(delay_ms or 0)

    def __bool__(self):
        return bool(self.rate or self.loss or self.delay_ms)

    def describe(self):
        parts = ([f"rate {self.rate}"] if self.rate else []) + ([f"loss {self.loss:g}%"] if self.loss else []) \
            + ([f"delay {self.delay_ms:g} ms"] if self.delay_ms else [])
        return ", ".join(parts) or "unshaped"

    def as_dict(self):
        return {"rate": self.rate, "loss_percent": self.loss, "delay_ms": self.delay_ms}


def _rate_bytes(rate):
    units = {"kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8, "bit": 1 / 8}
    for unit, factor in units.items():
        if rate.endswith(unit):
            return float(rate[: -len(unit)]) * factor
    raise ValueError(f"rate {rate!r}: use e.g. 1gbit, 10gbit, 400mbit")


def softnet_drops():
    """Packets dropped because a CPU's input backlog (net.core.netdev_max_backlog) was full: a veth
    hands every packet to that backlog, so an overloaded machine drops there before any socket sees
    it. Machine-wide (the counter is per CPU, not per namespace): the second column of softnet_stat."""
    with open("/proc/net/softnet_stat") as f:
        return sum(int(line.split()[1], 16) for line in f if line.strip())


def run(args, check=True, stdin=None):
    out = subprocess.run(args, input=stdin, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
    return out


class Topology:
    def __init__(self, tag, nodes, racks=1, servers=1, server_link=None, rack_link=None, extra_server_addresses=0):
        if not 1 <= racks <= MAX_RACKS:
            raise ValueError(f"racks: 1..{MAX_RACKS}")
        per_rack = -(-nodes // racks)
        if per_rack > PER_RACK:
            raise ValueError(f"{nodes} nodes in {racks} racks: at most {PER_RACK} per rack")
        self.tag, self.nodes, self.racks, self.servers = tag, nodes, racks, servers
        self.server_link, self.rack_link = server_link or LinkShape(), rack_link or LinkShape()
        self.extra_server_addresses = extra_server_addresses
        self._created = []

    # -- naming and addresses ------------------------------------------------------------------
    @property
    def switch_ns(self):
        return f"{self.tag}sw"

    def server_ns(self, i):
        return f"{self.tag}s{i}"

    def rack_ns(self, k):
        return f"{self.tag}r{k}"

    def server_addresses(self, i):
        """The server's addresses: its switch address first, then extras (for services bound apart)."""
        first = [str(SWITCH_NET[1 + i])]
        return first + [str(SWITCH_NET[1 + self.servers + i * self.extra_server_addresses + j])
                        for j in range(self.extra_server_addresses)]

    def rack_gateway(self, k):
        return str(SWITCH_NET[101 + k])

    def rack_prefix(self, k):
        return ipaddress.ip_network(f"{NODE_SPACE[0] + (k << (32 - RACK_PREFIX))}/{RACK_PREFIX}")

    def rack_of(self, i):
        """Nodes fill racks in contiguous blocks, as they are numbered in a machine room."""
        return i * self.racks // self.nodes

    def _first(self, k):
        return -(-k * self.nodes // self.racks)      # the smallest i with rack_of(i) == k

    def rack_nodes(self, k):
        return range(self._first(k), self._first(k + 1))

    def node_address(self, i):
        k = self.rack_of(i)
        return str(self.rack_prefix(k)[1 + i - self._first(k)])

    @staticmethod
    def exec_args(ns):
        return ["ip", "netns", "exec", ns]

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self):
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _netns(self, name):
        run(["ip", "netns", "add", name])
        self._created.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])

    def _plug(self, ns, port):
        """A veth pair: eth0 in `ns`, `port` on the switch's bridge."""
        run(["ip", "-n", self.switch_ns, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "-n", self.switch_ns, "link", "set", port, "master", "br0", "up"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def _sysctl(self, ns, **values):
        for key, value in values.items():
            run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", f"{key.replace('__', '.')}={value}"])

    def _bridge_without_netfilter(self):
        """A switch forwards frames; it does not run the host's iptables on them. Where the host has
        br_netfilter loaded (Docker loads it) every bridged frame would go through the switch
        namespace's netfilter hooks: a tenth of the servers' CPU in a storm, and not part of either
        stack. The sysctls are per namespace; without br_netfilter they don't exist."""
        for family in ("iptables", "ip6tables", "arptables"):
            key = f"/proc/sys/net/bridge/bridge-nf-call-{family}"
            run(["ip", "netns", "exec", self.switch_ns, "sh", "-c", f"[ ! -e {key} ] || echo 0 > {key}"])

    def create(self):
        self._netns(self.switch_ns)
        run(["ip", "-n", self.switch_ns, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.switch_ns, "link", "set", "br0", "up"])
        self._bridge_without_netfilter()
        for i in range(self.servers):
            ns = self.server_ns(i)
            self._netns(ns)
            self._plug(ns, f"s{i}")
            for addr in self.server_addresses(i):
                run(["ip", "-n", ns, "addr", "add", f"{addr}/{SWITCH_NET.prefixlen}", "dev", "eth0"])
            for k in range(self.racks):
                run(["ip", "-n", ns, "route", "add", str(self.rack_prefix(k)), "via", self.rack_gateway(k)])
            # a storm arrives at once: room for every node's connection in the listen queues
            self._sysctl(ns, net__core__somaxconn=65535, net__ipv4__tcp_max_syn_backlog=65535)
            self._shape(ns, "eth0", self.server_link)
            self._shape(self.switch_ns, f"s{i}", self.server_link)
            self._drop(ns, self.server_link.loss)
        for k in range(self.racks):
            ns = self.rack_ns(k)
            self._netns(ns)
            self._plug(ns, f"r{k}")
            run(["ip", "-n", ns, "addr", "add", f"{self.rack_gateway(k)}/{SWITCH_NET.prefixlen}", "dev", "eth0"])
            batch = "".join(f"addr add {self.node_address(i)}/32 dev eth0\n" for i in self.rack_nodes(k))
            run(["ip", "-n", ns, "-batch", "-"], stdin=batch)
            # ARP from the gateway address only: servers learn one neighbour per rack
            self._sysctl(ns, net__ipv4__conf__eth0__arp_announce=2, net__ipv4__ip_local_port_range="1024 65535")
            self._shape(ns, "eth0", self.rack_link)
            self._shape(self.switch_ns, f"r{k}", self.rack_link)
            for i in range(self.servers):
                self._drop(ns, self.server_link.loss, source=self.server_addresses(i))

    def _shape(self, ns, dev, shape):
        if not shape:
            return
        parent = ["root"]
        if shape.rate:
            per_second = _rate_bytes(shape.rate)
            burst = max(int(per_second / 1000), 256 * 1024)         # 1 ms of traffic, at least 4 GSO packets
            run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate", shape.rate,
                 "burst", str(burst), "latency", "50ms"])
            parent = ["parent", "1:1"]
        if shape.delay_ms:
            netem = ["tc", "-n", ns, "qdisc", "add", "dev", dev, *parent, "handle", "10:", "netem", "limit", "1000000",
                     "delay", f"{shape.delay_ms}ms"]
            if run(netem, check=False).returncode != 0:
                raise SystemExit("--delay-ms needs tc netem, which this kernel lacks (CONFIG_NET_SCH_NETEM)")
        if shape.loss:
            # one MSS per skb, so a lost "packet" is a packet (not a 64 KB TSO burst)
            run(["ip", "-n", ns, "link", "set", "dev", dev, "gso_max_segs", "1"], check=False)

    def _drop(self, ns, loss, source=()):
        """Drop `loss` % of what arrives on eth0 in `ns` (from `source` addresses only, if given)."""
        if not loss:
            return
        if self.rack_link.loss:
            raise SystemExit("loss on rack links is not modelled; use the server link's")
        match = ["-s", ",".join(source)] if source else []
        run(["ip", "netns", "exec", ns, "iptables", "-t", "raw", "-A", "PREROUTING", "-i", "eth0", *match,
             "-m", "statistic", "--mode", "random", "--probability", f"{loss / 100:.6f}", "-j", "DROP"])

    def dropped(self):
        """Packets the loss rules dropped, per namespace (to report the loss that was really applied)."""
        out = {}
        for ns in self._created:
            got = run(["ip", "netns", "exec", ns, "iptables", "-t", "raw", "-L", "PREROUTING", "-v", "-n", "-x"],
                      check=False)
            packets = [int(line.split()[0]) for line in got.stdout.splitlines()[2:] if "statistic" in line]
            if packets:
                out[ns] = sum(packets)
        return out

    def tcp_counters(self):
        """Summed TCP counters of every host namespace (servers and racks): a storm's run reports the
        difference, so a tail is explained by what the kernels recorded (timeouts, drops under memory
        pressure), not by a guess."""
        total = {}
        for ns in self._created:
            got = run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp", "/proc/net/netstat"], check=False)
            lines = got.stdout.splitlines()
            for names, values in zip(lines[::2], lines[1::2]):
                kind, _, names = names.partition(":")
                for name, value in zip(names.split(), values.partition(":")[2].split()):
                    if f"{kind}{name}" in TCP_COUNTERS:
                        total[f"{kind}{name}"] = total.get(f"{kind}{name}", 0) + int(value)
        total["SoftnetBacklogDrops"] = softnet_drops()
        return total

    def close(self):
        for name in reversed(self._created):
            run(["ip", "netns", "delete", name], check=False)
        self._created.clear()

    def describe(self):
        return (f"{self.racks} rack(s), {self.servers} server(s); server link {self.server_link.describe()}, "
                f"rack links {self.rack_link.describe()}")
