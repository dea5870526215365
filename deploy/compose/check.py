#!/usr/bin/env python3
"""Checks deploy/compose/compose.yaml against the code, without a Docker engine.

    python3 deploy/compose/check.py      (deploy/check.sh runs it; needs docker-compose on PATH
                                          or in the ops-tools directory, and promtool)

* The model is the one `docker-compose config --format json` resolves (anchors and merges as
  Compose itself applies them), not our own reading of the YAML.
* One service per processor the binary runs today (topology/topology.toml, which the binary's registrations are tested against), each
  `run <processor>` with a unique EVALSTREAM_INSTANCE_ID, its ops port, after `topology apply`.
* Every environment variable of an evalstream service is one evalstream or the AWS SDK reads.
* Prometheus scrapes exactly those processors as job `evalstream` and loads the alert rules
  (promtool check config on the two files as the container sees them).
* .dockerignore keeps every input of the build (workspace members, schemas/, topology/).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib

import yaml

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
import config_env  # noqa: E402


def tool(name):
    bin_dir = subprocess.run([str(ROOT / "deploy/local/ops-tools.sh"), "bin"], capture_output=True,
                             text=True, check=True).stdout.strip()
    candidate = pathlib.Path(bin_dir) / name
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def runnable_processors():
    # topology/topology.toml lists every processor; a unit test in cli/src/processors.rs holds the
    # binary's registrations equal to it, so this is the set `evalstream run` accepts.
    with open(ROOT / "topology/topology.toml", "rb") as f:
        return {p["name"] for p in tomllib.load(f)["processor"]}


def main():
    errors = []
    model = json.loads(subprocess.run(
        [tool("docker-compose"), "-f", str(HERE / "compose.yaml"), "config", "--format", "json"],
        capture_output=True, text=True, check=True).stdout)
    services = model["services"]
    processors = {}
    for name, svc in services.items():
        cmd = svc.get("command") or []
        if svc.get("image", "").startswith("evalstream") and cmd[:1] == ["run"]:
            processors[name] = svc
            if cmd != ["run", name]:
                errors.append(f"{name}: command {cmd} should be ['run', '{name}']")
    want = runnable_processors()
    if set(processors) != want:
        errors.append(f"processor services {sorted(processors)} != processors the binary runs {sorted(want)}")
    unknown_topology = want - set(config_env.topology_processors())
    if unknown_topology:
        errors.append(f"processors not in topology/topology.toml: {sorted(unknown_topology)}")
    ids = [svc.get("environment", {}).get("EVALSTREAM_INSTANCE_ID") for svc in processors.values()]
    if None in ids or len(set(ids)) != len(ids):
        errors.append(f"EVALSTREAM_INSTANCE_ID missing or repeated: {ids}")
    env_names = set()
    for name, svc in services.items():
        if svc.get("image", "").startswith("evalstream"):
            env_names |= set(svc.get("environment") or {})
    for name, svc in processors.items():
        if not any(p.get("target") == 8080 for p in svc.get("ports", [])):
            errors.append(f"{name}: ops port 8080 not published")
        if svc.get("depends_on", {}).get("topology", {}).get("condition") != "service_completed_successfully":
            errors.append(f"{name}: does not wait for `topology apply`")
        if not svc.get("read_only") or "ALL" not in svc.get("cap_drop", []):
            errors.append(f"{name}: not read-only without capabilities")
    for bad in config_env.unknown(env_names):
        errors.append(f"environment variable {bad} is read by nothing in evalstream")

    prom = yaml.safe_load((HERE / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    targets = {t for sc in jobs.get("evalstream", {}).get("static_configs", []) for t in sc["targets"]}
    if targets != {f"{p}:8080" for p in processors}:
        errors.append(f"prometheus job evalstream scrapes {sorted(targets)}, not the processors")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(HERE / "prometheus.yml", tmp)
        shutil.copy(ROOT / "deploy/prometheus/alerts.yml", tmp)
        r = subprocess.run([tool("promtool"), "check", "config", os.path.join(tmp, "prometheus.yml")],
                           capture_output=True, text=True)
        if r.returncode != 0:
            errors.append(f"promtool check config: {r.stdout}{r.stderr}")

    ignored = [l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")]
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    needed = ["Cargo.toml", "Cargo.lock", "schemas", "topology", *members]
    for path in needed:
        top = path.split("/")[0]
        if top in ignored or path in ignored:
            errors.append(f".dockerignore excludes {path}, which the image build reads")

    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    print(f"compose: {len(services)} services; processors {sorted(processors)}; environment, "
          "Prometheus and build context ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
