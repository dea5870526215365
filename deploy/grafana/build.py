#!/usr/bin/env python3
"""Builds deploy/grafana/evalstream.json, the evalstream dashboard, from the panel list below.

    python3 deploy/grafana/build.py           write evalstream.json
    python3 deploy/grafana/build.py --check   exit 1 if evalstream.json differs from what this builds

Why a script: the panels are data (section, title, query) and the Grafana JSON around them is
boilerplate; keeping the list here makes a review of "which query shows what" one screen, and the
layout (rows by runbook section, three panels a row) cannot drift by hand-editing. Edit the list,
run the script, commit both. CI runs --check. Importing the JSON into Grafana and saving changes
there is fine too: then copy the changed queries back here.

Every query uses $namespace and $processor (label filters; Grafana's "All" is `.*`) and
$__rate_interval / $__range. integration-tests/tests/alerts.rs evaluates every query against a
real Prometheus after its scenarios (no errors; data wherever traffic flowed).
"""

import json
import pathlib
import sys

OUT = pathlib.Path(__file__).with_name("evalstream.json")
F = 'namespace=~"$namespace", processor=~"$processor"'

# (runbook section, [(title, unit, [(expr, legend)], kind)]); kind: timeseries | stat | table
SECTIONS = [
    ("Health and readiness (runbook: health endpoints & quick checks)", [
        ("Scrape targets up", "none", [(f'up{{job="evalstream", namespace=~"$namespace"}}', "{{instance}}")], "timeseries"),
        ("Ready instances", "none", [(f"sum by (processor) (evalstream_ready{{{F}}})", "{{processor}}")], "timeseries"),
        ("Instances by mode", "none", [(f"sum by (processor, mode) (evalstream_mode{{{F}}} == 1)", "{{processor}} {{mode}}")], "stat"),
        ("Versions running", "none", [(f"count by (processor, version) (evalstream_build_info{{{F}}})", "{{processor}} {{version}}")], "stat"),
        ("Alerts fired in range", "none", [('sum by (alertname, severity) (count_over_time(ALERTS{alertstate="firing"}[$__range]))', "{{severity}} {{alertname}}")], "table"),
    ]),
    ("KMS / signing (runbook: KMS / signing failures)", [
        ("Signing failures /s", "ops", [(f"sum by (processor) (rate(audit_signing_failures_total{{{F}}}[$__rate_interval]))", "{{processor}}")], "timeseries"),
        ("Checkpoints pending signature", "none", [(f"sum by (processor) (audit_checkpoints_pending_signature{{{F}}})", "{{processor}}")], "timeseries"),
        ("Emergency signer active", "none", [(f"max by (processor) (audit_emergency_signer_active{{{F}}})", "{{processor}}")], "stat"),
    ]),
    ("SentinelNet / policy (runbook: SentinelNet outage or denial spike)", [
        ("Eval submissions /s by outcome", "ops", [(f"sum by (outcome) (rate(eval_engine_eval_submissions_total{{{F}}}[$__rate_interval]))", "{{outcome}}")], "timeseries"),
        ("Policy denials /s", "ops", [
            (f"sum by (subject_kind) (rate(eval_engine_promotion_policy_denials_total{{{F}}}[$__rate_interval]))", "{{subject_kind}}"),
            (f"sum by (subject_kind) (rate(eval_engine_promotion_policy_denials_total{{{F}}}[1h] offset 10m))", "{{subject_kind}} baseline (hour before)"),
        ], "timeseries"),
        ("Denials by reason in range", "none", [(f"topk(10, sum by (subject_kind, reason) (increase(eval_engine_promotion_policy_denials_total{{{F}}}[$__range])))", "{{subject_kind}} {{reason}}")], "table"),
        ("Policy decisions /s", "ops", [(f"sum by (subject_kind, decision, simulate) (rate(eval_engine_policy_decisions_total{{{F}}}[$__rate_interval]))", "{{subject_kind}} {{decision}} simulate={{simulate}}")], "timeseries"),
        ("Requests waiting for a decision", "none", [(f"sum by (subject_kind) (eval_engine_policy_pending_requests{{{F}}})", "{{subject_kind}}")], "timeseries"),
        ("Oldest waiting request", "s", [(f"max by (subject_kind) (eval_engine_policy_oldest_pending_age_seconds{{{F}}})", "{{subject_kind}}")], "timeseries"),
        ("Decision feed staleness", "s", [(f"time() - max(eval_engine_policy_last_decision_timestamp_seconds{{{F}}})", "since the newest decision")], "stat"),
        ("Degraded (best-effort) mode", "none", [(f"max(eval_engine_policy_degraded_mode{{{F}}})", "degraded")], "stat"),
        ("Best-effort passes /s", "ops", [(f"sum by (subject_kind) (rate(eval_engine_policy_best_effort_total{{{F}}}[$__rate_interval]))", "{{subject_kind}}")], "timeseries"),
    ]),
    ("Finance / settlement (runbook: Finance / ledger failures)", [
        ("Settlements /s by outcome", "ops", [(f"sum by (outcome) (rate(allocator_settlements_total{{{F}}}[$__rate_interval]))", "{{outcome}}")], "timeseries"),
        ("Settlement failures /s by reason", "ops", [(f"sum by (reason) (rate(allocator_settlement_failures_total{{{F}}}[$__rate_interval]))", "{{reason}}")], "timeseries"),
        ("Allocations by state", "none", [(f"sum by (state) (allocator_allocations{{{F}}})", "{{state}}")], "timeseries"),
        ("Oldest allocation in pending_finance", "s", [(f"max(allocator_pending_finance_oldest_age_seconds{{{F}}})", "oldest")], "timeseries"),
        ("Allocations frozen", "none", [(f"max(allocator_allocations_frozen{{{F}}})", "frozen")], "stat"),
    ]),
    ("Audit verification (runbook: audit verification failures)", [
        ("Entries verified /s", "ops", [(f"sum by (processor) (rate(audit_entries_verified_total{{{F}}}[$__rate_interval]))", "{{processor}}")], "timeseries"),
        ("Verification failures in range", "none", [(f"sum by (processor) (increase(audit_verification_failures_total{{{F}}}[$__range]))", "{{processor}}")], "stat"),
    ]),
    ("Kafka: throughput, lag, DLQ, rebalances", [
        ("Records in /s", "ops", [(f"sum by (processor, topic) (rate(evalstream_records_in_total{{{F}}}[$__rate_interval]))", "{{processor}} {{topic}}")], "timeseries"),
        ("Records out /s", "ops", [(f"sum by (processor, topic) (rate(evalstream_records_out_total{{{F}}}[$__rate_interval]))", "{{processor}} {{topic}}")], "timeseries"),
        ("Dead letters in range", "none", [(f"sum by (processor, topic, class) (increase(evalstream_records_dead_lettered_total{{{F}}}[$__range]))", "{{topic}} {{class}}")], "table"),
        ("Consumer lag", "none", [(f"sum by (processor, topic) (evalstream_consumer_lag{{{F}}})", "{{processor}} {{topic}}")], "timeseries"),
        ("Retried /s", "ops", [(f"sum by (processor, topic) (rate(evalstream_records_retried_total{{{F}}}[$__rate_interval]))", "{{processor}} {{topic}}")], "timeseries"),
        ("Rebalances in range", "none", [(f"sum by (processor, kind) (increase(evalstream_rebalances_total{{{F}}}[$__range]))", "{{processor}} {{kind}}")], "table"),
        ("Transactions committed /s", "ops", [(f"sum by (processor) (rate(evalstream_transactions_committed_total{{{F}}}[$__rate_interval]))", "{{processor}}")], "timeseries"),
        ("Transactions aborted /s", "ops", [(f"sum by (processor, reason) (rate(evalstream_transactions_aborted_total{{{F}}}[$__rate_interval]))", "{{processor}} {{reason}}")], "timeseries"),
        ("Commit latency p99", "s", [(f"histogram_quantile(0.99, sum by (processor, le) (rate(evalstream_commit_latency_seconds_bucket{{{F}}}[$__rate_interval])))", "{{processor}}")], "timeseries"),
    ]),
]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def label_variable(name, label):
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"query": f"label_values(evalstream_build_info, {label})", "refId": name},
        "definition": f"label_values(evalstream_build_info, {label})",
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "current": {"text": "All", "value": "$__all"},
        "refresh": 2,
        "sort": 1,
    }


def panel(pid, title, unit, queries, kind, x, y):
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
             "legendFormat": legend, **({"instant": True, "format": "table"} if kind == "table" else {})}
            for i, (expr, legend) in enumerate(queries)
        ],
    }
    return p


def build():
    panels, pid, y = [], 1, 0
    for section, items in SECTIONS:
        panels.append({"id": pid, "type": "row", "title": section, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid += 1
        y += 1
        for i, (title, unit, queries, kind) in enumerate(items):
            panels.append(panel(pid, title, unit, queries, kind, (i % 3) * 8, y + (i // 3) * 8))
            pid += 1
        y += ((len(items) + 2) // 3) * 8
    return {
        "title": "evalstream",
        "uid": "evalstream",
        "description": "evalstream processors by runbook section (docs/runbook.md); built by deploy/grafana/build.py",
        "tags": ["evalstream"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            label_variable("namespace", "namespace"),
            label_variable("processor", "processor"),
        ]},
        "annotations": {"list": [
            {"name": "Alerts", "datasource": DATASOURCE, "enable": True, "iconColor": "red",
             "expr": 'ALERTS{alertstate="firing", severity=~"P0|P1"}', "titleFormat": "{{alertname}}",
             "tagKeys": "severity,processor"},
        ]},
        "panels": panels,
    }


def main():
    text = json.dumps(build(), indent=2) + "\n"
    if sys.argv[1:] == ["--check"]:
        if OUT.read_text() != text:
            print(f"{OUT} is not what build.py builds: run python3 deploy/grafana/build.py", file=sys.stderr)
            return 1
        print(f"{OUT.name}: up to date")
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
