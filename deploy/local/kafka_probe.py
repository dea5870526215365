#!/usr/bin/env python3
"""Is a Kafka-protocol broker ready? Asks it for cluster metadata over the Kafka wire protocol.

    python3 deploy/local/kafka_probe.py HOST:PORT [--timeout SECONDS] [--quiet]

Exit 0 when the broker answers a Metadata request (API key 3, version 4) with at least one
broker and a controller id, and prints "cluster <id>, controller <n>, brokers <host:port,...>";
exit 1 otherwise with the reason on stderr.

Why a protocol request and not an open port: a KRaft broker opens its listener before it has
caught up with the metadata log, and a Tansu or Kafka JVM that is still starting can accept a
TCP connection and then close it. A Metadata answer that lists a broker and a controller is
what every client (librdkafka included) needs before it can do anything, and it costs one round
trip, so the scripts can poll it every few hundred milliseconds without loading the machine
(starting a JVM-based checker per poll would not be cheap on two cores).

Why version 4: Kafka 4.0 removed Metadata v0-v3 (KIP-896); v4 is the oldest version that 4.x
still serves, it is still a non-flexible ("classic") encoding that takes a few lines to write,
and Tansu serves it as well. Standard library only.
"""

import argparse
import socket
import struct
import sys

METADATA = 3
VERSION = 4
CORRELATION_ID = 0x65766C73  # "evls"
CLIENT_ID = b"evalstream-probe"


def request() -> bytes:
    # Request header v1: api_key, api_version, correlation_id, client_id (nullable string).
    header = struct.pack(">hhih", METADATA, VERSION, CORRELATION_ID, len(CLIENT_ID)) + CLIENT_ID
    # Metadata v4 body: topics = empty array (no topic metadata, just brokers and controller),
    # allow_auto_topic_creation = false.
    body = struct.pack(">i?", 0, False)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


class Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise ValueError("response is truncated")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return value

    def string(self):
        n = self.take(">h")
        if n < 0:
            return None
        if self.pos + n > len(self.data):
            raise ValueError("response is truncated")
        s = self.data[self.pos : self.pos + n].decode("utf-8", "replace")
        self.pos += n
        return s


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        buf += chunk
    return bytes(buf)


def probe(host: str, port: int, timeout: float):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(request())
        (size,) = struct.unpack(">i", recv_exact(sock, 4))
        if not 0 < size < 1 << 24:
            raise ValueError(f"implausible response size {size}")
        r = Reader(recv_exact(sock, size))
    if r.take(">i") != CORRELATION_ID:
        raise ValueError("correlation id mismatch")
    r.take(">i")  # throttle_time_ms
    brokers = []
    for _ in range(r.take(">i")):
        node_id = r.take(">i")
        broker_host = r.string()
        broker_port = r.take(">i")
        r.string()  # rack
        brokers.append((node_id, broker_host, broker_port))
    cluster_id = r.string()
    controller_id = r.take(">i")
    return cluster_id, controller_id, brokers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("address", help="HOST:PORT of the broker")
    ap.add_argument("--timeout", type=float, default=2.0, help="socket timeout in seconds")
    ap.add_argument("--quiet", action="store_true", help="print nothing on success")
    args = ap.parse_args()
    host, _, port = args.address.rpartition(":")
    try:
        cluster_id, controller_id, brokers = probe(host or "127.0.0.1", int(port), args.timeout)
    except (OSError, ValueError) as e:
        print(f"kafka_probe: {args.address}: {e}", file=sys.stderr)
        return 1
    if not brokers or controller_id < 0:
        print(
            f"kafka_probe: {args.address}: metadata has no brokers or no controller yet",
            file=sys.stderr,
        )
        return 1
    if not args.quiet:
        listed = ",".join(f"{h}:{p}" for _, h, p in brokers)
        print(f"cluster {cluster_id}, controller {controller_id}, brokers {listed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
