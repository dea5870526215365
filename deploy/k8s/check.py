#!/usr/bin/env python3
"""Checks the rendered overlays for what the Kubernetes schemas cannot see.

    python3 deploy/k8s/check.py DIR      DIR holds <overlay>.yaml files rendered by kustomize

* production runs every processor of topology/topology.toml except the reference `totals`;
  dev runs all of them;
* each processor StatefulSet runs `evalstream run <its name>`, takes EVALSTREAM_INSTANCE_ID from
  its pod name, probes /health (liveness) and /ready (readiness), runs non-root with a read-only
  root filesystem and no capabilities, requests CPU and memory, is spread over zones, has a
  PodDisruptionBudget, and reads a config file that exists in evalstream-config;
* a Job runs `topology apply` and a CronJob runs `audit verify`;
* every environment variable set anywhere is one evalstream (or the AWS SDK) reads.
"""

import pathlib
import sys

import yaml

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import config_env  # noqa: E402


def check(overlay, docs, errors):
    def err(msg):
        errors.append(f"{overlay}: {msg}")

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    processors = config_env.topology_processors()
    want = set(processors) if overlay == "dev" else set(processors) - {"totals"}
    sets = {s["metadata"]["name"]: s for s in by_kind.get("StatefulSet", [])}
    if set(sets) != want:
        err(f"StatefulSets {sorted(sets)} != processors {sorted(want)}")
    configs = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    config_files = next((c.get("data", {}) for n, c in configs.items() if n.startswith("evalstream-config")), {})
    pdb_selectors = [p["spec"]["selector"]["matchLabels"] for p in by_kind.get("PodDisruptionBudget", [])]
    env_names = set()
    for name, s in sets.items():
        pod = s["spec"]["template"]["spec"]
        c = pod["containers"][0]
        if c.get("args") != ["run", name]:
            err(f"{name}: args {c.get('args')} != ['run', '{name}']")
        env = {e["name"]: e for e in c.get("env", [])}
        env_names |= set(env)
        iid = env.get("EVALSTREAM_INSTANCE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
        if iid != "metadata.name":
            err(f"{name}: EVALSTREAM_INSTANCE_ID is not the pod name")
        cfg = env.get("EVALSTREAM_CONFIG", {}).get("value", "")
        if pathlib.PurePath(cfg).name not in config_files:
            err(f"{name}: EVALSTREAM_CONFIG {cfg!r} is not a key of evalstream-config")
        if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health":
            err(f"{name}: liveness probe is not /health")
        if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/ready":
            err(f"{name}: readiness probe is not /ready")
        sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
        if not (psc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
                and sc.get("allowPrivilegeEscalation") is False and sc.get("capabilities", {}).get("drop") == ["ALL"]):
            err(f"{name}: not non-root / read-only / unprivileged")
        req = c.get("resources", {}).get("requests", {})
        if not (req.get("cpu") and req.get("memory")):
            err(f"{name}: no CPU and memory requests")
        keys = {t["topologyKey"] for t in pod.get("topologySpreadConstraints", [])}
        if "topology.kubernetes.io/zone" not in keys:
            err(f"{name}: not spread over zones")
        labels = s["spec"]["selector"]["matchLabels"]
        if not any(all(labels.get(k) == v for k, v in sel.items()) for sel in pdb_selectors):
            err(f"{name}: no PodDisruptionBudget selects it")
    jobs = [j["spec"]["template"]["spec"]["containers"][0].get("args", []) for j in by_kind.get("Job", [])]
    if not any(a[:2] == ["topology", "apply"] for a in jobs):
        err("no Job runs `topology apply`")
    crons = [" ".join(c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0].get("args", []))
             for c in by_kind.get("CronJob", [])]
    if not any("evalstream audit verify" in a for a in crons):
        err("no CronJob runs `evalstream audit verify`")
    for c in by_kind.get("ConfigMap", []):
        if c["metadata"]["name"].startswith("evalstream-env"):
            env_names |= set(c.get("data", {}))
    for s in by_kind.get("Secret", []):
        env_names |= set(s.get("data", {})) | set(s.get("stringData", {}))
    for bad in config_env.unknown(env_names):
        err(f"environment variable {bad} is read by nothing in evalstream")


def main():
    rendered = pathlib.Path(sys.argv[1])
    errors = []
    overlays = sorted(rendered.glob("*.yaml"))
    for f in overlays:
        if f.stem == "broken":
            continue
        check(f.stem, [d for d in yaml.safe_load_all(f.read_text()) if d], errors)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    print(f"k8s: {', '.join(f.stem for f in overlays)}: processors, probes, security, PDBs, jobs and environment ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
