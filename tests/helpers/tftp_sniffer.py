"""Record every TFTP read request seen on an interface: what a firmware really asked for.

    ip netns exec NS python tests/helpers/tftp_sniffer.py br0 OUT.jsonl

One JSON line per RRQ (UDP to port 69): {"client": "ip:port", "mac": source MAC, "file": name,
"mode": ..., "options": {name: value}}, flushed as it comes. Prints "ready" once the raw socket is bound;
runs until killed. A raw AF_PACKET socket, so it sees the packets without taking part.
"""
import json
import socket
import struct
import sys

ETH_P_ALL = 0x0003


def parse_rrq(frame):
    """The RRQ in an Ethernet frame, or None."""
    if len(frame) < 14 + 20 + 8 + 4 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    header_len = (ip[0] & 0x0F) * 4
    if ip[9] != 17:                  # UDP
        return None
    udp = ip[header_len:]
    src_port, dst_port = struct.unpack("!HH", udp[:4])
    payload = udp[8:]
    if dst_port != 69 or payload[:2] != b"\x00\x01":
        return None
    fields = payload[2:].split(b"\0")
    if len(fields) < 2:
        return None
    words = [f.decode("latin-1") for f in fields[:-1]]
    options = {words[i].lower(): words[i + 1] for i in range(2, len(words) - 1, 2)}
    mac = ":".join(f"{b:02x}" for b in frame[6:12])
    return {"client": f"{socket.inet_ntoa(ip[12:16])}:{src_port}", "mac": mac, "file": words[0],
            "mode": words[1].lower(), "options": options}


def main(iface, out_path):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    print("ready", flush=True)
    with open(out_path, "a", buffering=1) as out:
        while True:
            frame, address = sock.recvfrom(65535)
            if address[2] == socket.PACKET_OUTGOING:
                continue
            request = parse_rrq(frame)
            if request is not None:
                out.write(json.dumps(request) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
