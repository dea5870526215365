#!/usr/bin/env python3
"""Is a Kafka-protocol broker ready? Asks it for cluster metadata over the Kafka wire protocol.

    python3 deploy/local/kafka_probe.py HOST:PORT [--timeout SECONDS] [--quiet]
    python3 deploy/local/kafka_probe.py HOST:PORT --topics-with-prefix PREFIX [--wait SECONDS]

Exit 0 when the broker answers a Metadata request (API key 3, version 4) with at least one
broker and a controller id, and prints "cluster <id>, controller <n>, brokers <host:port,...>";
exit 1 otherwise with the reason on stderr.

With --topics-with-prefix, also requires that at least one topic has that name prefix and that
every partition of every such topic has a leader and no error, polling for up to --wait seconds:
topics that were just created answer "not leader" until their leaders are elected, and a client
that starts in that window (a processor's first restore) sees a retriable error.

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
import time

METADATA = 3
VERSION = 4
CORRELATION_ID = 0x65766C73  # "evls"
CLIENT_ID = b"evalstream-probe"


def request(all_topics: bool = False) -> bytes:
    # Request header v1: api_key, api_version, correlation_id, client_id (nullable string).
    header = struct.pack(">hhih", METADATA, VERSION, CORRELATION_ID, len(CLIENT_ID)) + CLIENT_ID
    # Metadata v4 body: topics = empty array (no topic metadata, just brokers and controller) or
    # null (every topic), allow_auto_topic_creation = false.
    body = struct.pack(">i?", -1 if all_topics else 0, False)
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


def probe(host: str, port: int, timeout: float, all_topics: bool = False):
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(request(all_topics))
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
    topics = {}  # name -> [(partition, error code, leader)], or the topic's error code
    if all_topics:
        for _ in range(r.take(">i")):
            error = r.take(">h")
            name = r.string()
            r.take(">?")  # is_internal
            partitions = []
            for _ in range(r.take(">i")):
                p_error = r.take(">h")
                index = r.take(">i")
                leader = r.take(">i")
                for _ in range(2):  # replica_nodes, isr_nodes
                    for _ in range(r.take(">i")):
                        r.take(">i")
                partitions.append((index, p_error, leader))
            topics[name] = error if error else partitions
    return cluster_id, controller_id, brokers, topics


def topics_ready(topics: dict, prefix: str):
    """None when every topic named prefix* has a leader on every partition, else why not."""
    chosen = {n: t for n, t in topics.items() if n and n.startswith(prefix)}
    if not chosen:
        return f"no topic named {prefix}*"
    for name, parts in sorted(chosen.items()):
        if isinstance(parts, int):
            return f"{name}: error code {parts}"
        for index, error, leader in parts:
            if error or leader < 0:
                return f"{name}[{index}]: error code {error}, leader {leader}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("address", help="HOST:PORT of the broker")
    ap.add_argument("--timeout", type=float, default=2.0, help="socket timeout in seconds")
    ap.add_argument("--quiet", action="store_true", help="print nothing on success")
    ap.add_argument("--topics-with-prefix", metavar="PREFIX", help="also wait for these topics")
    ap.add_argument("--wait", type=float, default=0.0, help="seconds to keep polling")
    args = ap.parse_args()
    host, _, port = args.address.rpartition(":")
    deadline = time.monotonic() + args.wait
    while True:
        try:
            cluster_id, controller_id, brokers, topics = probe(
                host or "127.0.0.1", int(port), args.timeout, args.topics_with_prefix is not None
            )
            problem = None
            if not brokers or controller_id < 0:
                problem = "metadata has no brokers or no controller yet"
            elif args.topics_with_prefix is not None:
                problem = topics_ready(topics, args.topics_with_prefix)
        except (OSError, ValueError) as e:
            problem = str(e)
        if problem is None:
            break
        if time.monotonic() >= deadline:
            print(f"kafka_probe: {args.address}: {problem}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    if not args.quiet:
        listed = ",".join(f"{h}:{p}" for _, h, p in brokers)
        print(f"cluster {cluster_id}, controller {controller_id}, brokers {listed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
