#!/usr/bin/env python3
"""Measures CPU and memory of real processors under load: the numbers behind the resource
requests of deploy/k8s (see deploy/k8s/README.md "Sizing").

    # a broker (deploy/local/kafka.sh start), moto (deploy/local/moto.sh start), a release build:
    cargo build --release -p evalstream
    $EVALSTREAM_CACHE/moto-5.2.5/bin/python tools/measure_processors.py \
        --bin $CARGO_TARGET_DIR/release/evalstream --records 200000

Runs with the Python of moto's venv because it creates the KMS key with boto3.

For each of totals, audit-chain (signing with AWS KMS on moto) and audit-verifier, in turn and
alone on the machine: start it on a fresh topic prefix, let it join and idle, then produce
--records inputs at once (for audit-verifier: the chain audit-chain wrote) and sample the
process every 0.25 s from /proc until its records_in counter reaches the input count. Reports
RSS when idle and its peak (VmHWM), CPU seconds, throughput, and the average number of cores used
while busy. Memory is what the process holds, librdkafka's queues included.
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


def measure(args, name, prefix, env, produce, expected):
    port = free_port()
    penv = dict(env, EVALSTREAM_TOPIC_PREFIX=prefix, EVALSTREAM_OPS_LISTEN=f"127.0.0.1:{port}",
                EVALSTREAM_INSTANCE_ID=f"measure-{name}", EVALSTREAM_LOG="warn")
    proc = subprocess.Popen([args.bin, "run", name], env=penv, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while True:
            try:
                if json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2)).get("ready"):
                    break
            except OSError:
                pass
            if time.time() > deadline:
                sys.exit(f"{name} not ready within 60 s")
            time.sleep(0.25)
        time.sleep(2)
        cpu0, idle_rss, _ = proc_sample(proc.pid)
        produce()
        t0 = time.time()
        peak_rss = idle_rss
        while records_in(port) < expected:
            if time.time() - t0 > args.timeout:
                sys.exit(f"{name}: only {records_in(port)} of {expected} records in {args.timeout} s")
            _, rss, hwm = proc_sample(proc.pid)
            peak_rss = max(peak_rss, rss, hwm)
            time.sleep(0.25)
        wall = time.time() - t0
        cpu1, rss, hwm = proc_sample(proc.pid)
        return {"processor": name, "records": expected, "wall_s": round(wall, 1),
                "records_per_s": round(expected / wall), "cpu_s": round(cpu1 - cpu0, 1),
                "cpu_ms_per_1k": round(1000 * (cpu1 - cpu0) / expected * 1000, 1),
                "cores_busy": round((cpu1 - cpu0) / wall, 2),
                "rss_idle_mib": round(idle_rss), "rss_peak_mib": round(max(peak_rss, hwm))}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


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
    penv = dict(env, EVALSTREAM_TOPIC_PREFIX=prefix)
    signers = tmp / "signers.json"
    run([args.bin, "signers", "add", "--file", str(signers), "--kid", "measure", "--from-kms", key,
         "--valid-from", "2000-01-01T00:00:00Z"], dict(env, AWS_ENDPOINT_URL=moto))
    chain_env = dict(env, REQUIRE_KMS="true", AUDIT_SIGNING_KMS_KEY_ID=key, AUDIT_SIGNER_KID="measure",
                     AWS_ENDPOINT_URL=moto)
    results = [
        measure(args, "totals", prefix, env,
                lambda: run([args.bin, "produce", "totals.input", "--file", str(totals), "--key-field", "key"], penv), n),
        measure(args, "audit-chain", prefix, chain_env,
                lambda: run([args.bin, "produce", "audit.events", "--file", str(events), "--key-field", "subject"], penv), n),
    ]
    # The verifier reads what audit-chain wrote: entries plus checkpoints.
    chain_records = int(subprocess.run(
        [args.bin, "consume", "audit.chain", "--from-beginning", "--format", "json"], env=penv,
        capture_output=True, text=True, check=True).stdout.count("\n"))
    results.append(measure(args, "audit-verifier", prefix, dict(env, SIGNERS_FILE=str(signers)),
                           lambda: None, chain_records))
    print(json.dumps(results, indent=1))
    cols = list(results[0])
    print(" | ".join(cols))
    for r in results:
        print(" | ".join(str(r[c]) for c in cols))


if __name__ == "__main__":
    main()
