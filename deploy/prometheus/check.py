#!/usr/bin/env python3
"""Checks the conventions of deploy/prometheus/alerts.yml that promtool cannot.

    python3 deploy/prometheus/check.py

For every alert:
  * labels.severity is one of the runbook's levels P0..P3;
  * annotations summary, description and runbook_url are set, and runbook_url is
    docs/runbook.md#<anchor> with that anchor present in docs/runbook.md (and the alert listed
    in its table);
  * deploy/prometheus/tests/*.yml has a case where it fires (exp_alerts non-empty) and one where
    it must not (exp_alerts: []);
  * every evalstream metric its expression reads is documented in docs/operations.md, so a rule
    cannot silently watch a series no processor exports.
Exits 1 listing every violation.
"""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/alerts.yml"
TESTS = sorted((ROOT / "deploy/prometheus/tests").glob("*.yml"))
RUNBOOK = ROOT / "docs/runbook.md"
OPERATIONS = ROOT / "docs/operations.md"
SEVERITIES = {"P0", "P1", "P2", "P3"}
# Series our processors export; `up` and kube-state-metrics come from Prometheus and the cluster.
OWN_METRIC = re.compile(r"\b((?:evalstream|audit|eval_engine|allocator)_[a-z0-9_]+)")


def alerts():
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                yield rule


def test_cases():
    """(alertname, fires) for every alert_rule_test of every test file."""
    for path in TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc.get("rule_files") == ["../alerts.yml"], f"{path}: must test ../alerts.yml"
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                yield case["alertname"], bool(case.get("exp_alerts"))


def main():
    errors = []
    runbook = RUNBOOK.read_text()
    anchors = set(re.findall(r'<a id="([a-z0-9-]+)"></a>', runbook))
    operations = OPERATIONS.read_text()
    cases = list(test_cases())
    names = []
    for rule in alerts():
        name = rule["alert"]
        names.append(name)
        labels = rule.get("labels", {})
        notes = rule.get("annotations", {})
        if labels.get("severity") not in SEVERITIES:
            errors.append(f"{name}: severity {labels.get('severity')!r} is not one of P0..P3")
        for key in ("summary", "description", "runbook_url"):
            if not notes.get(key):
                errors.append(f"{name}: annotation {key} missing")
        url = notes.get("runbook_url", "")
        match = re.fullmatch(r"docs/runbook\.md#([a-z0-9-]+)", url)
        if not match:
            errors.append(f"{name}: runbook_url {url!r} is not docs/runbook.md#<anchor>")
        elif match.group(1) not in anchors:
            errors.append(f"{name}: anchor #{match.group(1)} not in docs/runbook.md")
        if f"| `{name}` | {labels.get('severity')} |" not in runbook:
            errors.append(f"{name}: not in the table of docs/runbook.md with its severity")
        if (name, True) not in cases:
            errors.append(f"{name}: no promtool case where it fires")
        if (name, False) not in cases:
            errors.append(f"{name}: no promtool case where it must not fire")
        for metric in set(OWN_METRIC.findall(rule["expr"])):
            if f"`{metric}`" not in operations:
                errors.append(f"{name}: metric {metric} is not documented in docs/operations.md")
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        errors.append(f"alert names used twice: {sorted(duplicates)}")
    unknown = {n for n, _ in cases} - set(names)
    if unknown:
        errors.append(f"tests name alerts that do not exist: {sorted(unknown)}")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    print(f"{len(names)} alerts: severities, runbook anchors, metric names and firing/not-firing cases ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
