#!/usr/bin/env python3
"""Measures CPU and memory of real processors under load: the numbers behind the resource
requests of deploy/k8s (see deploy/k8s/README.md "Sizing").

    # a broker (deploy/local/kafka.sh start), moto (deploy/local/moto.sh start), a release build:
    cargo build --release -p evalstream
    $EVALSTREAM_CACHE/moto-5.2.5/bin/python tools/measure_processors.py \
        --bin $CARGO_TARGET_DIR/release/evalstream --records 200000

Runs with the Python of moto's venv because it creates the KMS key with boto3.

First totals alone, then audit-chain (signing with AWS KMS on moto) and audit-verifier together
as deployed (the verifier reads what the chain writes): start them on a fresh topic prefix, let
them join and idle, then produce --records inputs (`evalstream produce`, in the background) and
sample every process every 0.25 s from /proc until its records_in counter reaches its input
count. Reports RSS when idle and its peak (max of VmRSS samples and VmHWM), CPU seconds (utime +
stime), throughput, and the average number of cores used while busy. Throughput includes the time
producing takes; on a loaded machine it is a lower bound, CPU seconds per record much less so.
"""

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")


def proc_sample(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    status = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    return cpu, rss, hwm


def records_in(port):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("evalstream_records_in_total{"))


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def run(cmd, env, **kw):
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, **kw)


class Instance:
    """One processor process with its ops port and samples."""

    def __init__(self, args, name, prefix, env):
        self.name, self.port = name, free_port()
        penv = dict(env, EVALSTREAM_TOPIC_PREFIX=prefix, EVALSTREAM_OPS_LISTEN=f"127.0.0.1:{self.port}",
                    EVALSTREAM_INSTANCE_ID=f"measure-{name}", EVALSTREAM_LOG="warn")
        self.proc = subprocess.Popen([args.bin, "run", name], env=penv, stderr=subprocess.DEVNULL)
        self.peak = 0
        self.done_at = None

    def wait_ready(self):
        deadline = time.time() + 60
        while True:
            try:
                if json.load(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=2)).get("ready"):
                    return
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit(f"{self.name} not ready within 60 s")
            time.sleep(0.25)

    def sample(self):
        cpu, rss, hwm = proc_sample(self.proc.pid)
        self.peak = max(self.peak, rss, hwm)
        return cpu, rss

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def measure(args, group, produce, expected):
    """Starts `group` (name -> (prefix, env)), waits until all are ready and idle, then runs
    `produce` in the background and samples every process until each has taken in
    expected[name]() records. `group` is in pipeline order: a process's count is asked for only
    once the processes before it are done (the verifier's input is known only then)."""
    procs = [Instance(args, name, prefix, env) for name, (prefix, env) in group.items()]
    try:
        for p in procs:
            p.wait_ready()
        time.sleep(2)
        start = {p.name: p.sample() for p in procs}
        t0 = time.time()
        producer = subprocess.Popen(produce, env=produce_env(group), stdout=subprocess.DEVNULL)
        pending = list(procs)
        while pending:
            if time.time() - t0 > args.timeout:
                sys.exit(f"{[p.name for p in pending]} did not finish in {args.timeout} s")
            for p in procs:
                p.sample()
            while pending and producer.poll() is not None and records_in(pending[0].port) >= expected[pending[0].name]():
                pending[0].done_at = time.time()
                pending.pop(0)
            time.sleep(0.25)
        if producer.wait() != 0:
            sys.exit("producing failed")
        results = []
        for p in procs:
            cpu1, _ = p.sample()
            cpu0, idle = start[p.name]
            wall, n = p.done_at - t0, expected[p.name]()
            results.append({"processor": p.name, "records": n, "wall_s": round(wall, 1),
                            "records_per_s": round(n / wall), "cpu_s": round(cpu1 - cpu0, 1),
                            "cpu_ms_per_1k": round(1000 * (cpu1 - cpu0) / n * 1000, 1),
                            "cores_busy": round((cpu1 - cpu0) / wall, 2),
                            "rss_idle_mib": round(idle), "rss_peak_mib": round(p.peak)})
        return results
    finally:
        for p in procs:
            p.stop()


def produce_env(group):
    prefix, env = next(iter(group.values()))
    return dict(env, EVALSTREAM_TOPIC_PREFIX=prefix)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--timeout", type=int, default=600)
    args = ap.parse_args()
    import boto3

    moto = os.environ.get("MOTO_URL", "http://127.0.0.1:5000")
    env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1")
    kms = boto3.client("kms", endpoint_url=moto, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    key = kms.create_key(KeySpec="ECC_NIST_P256", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"]
    prefix = f"measure{int(time.time())}."
    tmp = pathlib.Path(tempfile.mkdtemp())
    run([args.bin, "topology", "apply"], dict(env, EVALSTREAM_TOPIC_PREFIX=prefix))
    n = args.records
    totals = tmp / "totals.jsonl"
    with open(totals, "w") as f:
        for i in range(n):
            f.write(f'{{"key": "k{i % 1000}", "amount": {i % 97 + 1}}}\n')
    events = tmp / "events.jsonl"
    with open(events, "w") as f:
        for i in range(n):
            payload = json.dumps({"n": i, "suite": "safety-v3", "score": (i % 100) / 100})
            f.write(json.dumps({"event_id": f"ev-{i}", "type": "eval.submission_accepted", "actor": f"svc-{i % 7}",
                                "subject": f"model-{i % 50}", "occurred_at": "2026-11-27T09:00:00Z",
                                "payload": payload}) + "\n")
    signers = tmp / "signers.json"
    run([args.bin, "signers", "add", "--file", str(signers), "--kid", "measure", "--from-kms", key,
         "--valid-from", "2000-01-01T00:00:00Z"], dict(env, AWS_ENDPOINT_URL=moto))
    chain_env = dict(env, REQUIRE_KMS="true", AUDIT_SIGNING_KMS_KEY_ID=key, AUDIT_SIGNER_KID="measure",
                     AWS_ENDPOINT_URL=moto)
    n_of = lambda n: (lambda: n)  # noqa: E731
    results = measure(args, {"totals": (prefix, env)},
                      [args.bin, "produce", "totals.input", "--file", str(totals), "--key-field", "key"],
                      {"totals": n_of(n)})
    # audit-chain and audit-verifier together, as deployed: the verifier reads what the chain
    # writes (entries plus checkpoints), counted once the chain is done.
    chain_records = {}

    def chain_count():
        if "n" not in chain_records:
            time.sleep(2)  # the idle checkpoint after the last entry (punctuate_ms 1000)
            out = subprocess.run([args.bin, "consume", "audit.chain", "--from-beginning", "--format", "json"],
                                 env=dict(env, EVALSTREAM_TOPIC_PREFIX=prefix), capture_output=True,
                                 text=True, check=True).stdout
            chain_records["n"] = out.count("\n")
        return chain_records["n"]

    group = {"audit-chain": (prefix, chain_env), "audit-verifier": (prefix, dict(env, SIGNERS_FILE=str(signers)))}
    results += measure(args, group,
                       [args.bin, "produce", "audit.events", "--file", str(events), "--key-field", "subject"],
                       {"audit-chain": n_of(n), "audit-verifier": chain_count})
    print(json.dumps(results, indent=1))
    cols = list(results[0])
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))


if __name__ == "__main__":
    main()
