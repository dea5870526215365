//! Parity vectors: `test/vectors/audit_canonical_vectors.json` (the file the runbook's audit
//! verification section names) is regenerated here from the event inputs below and must match
//! byte for byte in content; `tools/verify_audit_vectors.py` recomputes every hash, root, proof
//! and checkpoint body from the file with Python's standard library only.
//!
//! After an intentional change (new cases, or a new chain version), rewrite the file with
//! `BLESS_VECTORS=1 cargo test -p evalstream-audit --test vectors` and review the diff: a
//! changed hash for an existing case means the chain format changed.

use std::path::PathBuf;
use std::process::Command;

use evalstream_audit::canonical::canonicalize_str;
use evalstream_audit::chain::{
    genesis_hash, AuditEventJson, ChainHead, ENTRY_TAG, GENESIS_TAG, MAX_OCCURRED_AT_MS,
};
use evalstream_audit::checkpoint::{checkpoint_body, CHECKPOINT_HEADER, CHECKPOINT_ORIGIN};
use evalstream_audit::merkle::{
    consistency_proof, inclusion_proof, root, verify_consistency, verify_inclusion, CompactRange,
    Hash, EMPTY_ROOT, LEAF_PREFIX, NODE_PREFIX,
};
use evalstream_runtime::b64;
use serde_json::{json, Value};

const VECTORS: &str = "test/vectors/audit_canonical_vectors.json";

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

fn event(id: &str, ty: &str, actor: &str, subject: &str, at: i64, payload: &str) -> AuditEventJson {
    AuditEventJson {
        event_id: id.into(),
        event_type: ty.into(),
        actor: actor.into(),
        subject: subject.into(),
        occurred_at: at,
        payload: payload.into(),
    }
}

/// The two chains of the vector file. Payloads are the producer's JSON text, deliberately
/// non-canonical (spacing, key order, escapes, number spellings) so that the canonical bytes
/// show every rule at work.
fn chains() -> Vec<(u32, Vec<AuditEventJson>)> {
    vec![
        (
            0,
            vec![
                event(
                    "evt-0000",
                    "eval.submission_accepted",
                    "eval-engine",
                    "model-7",
                    1_731_900_000_000,
                    r#"{"suite": "safety-v2", "score": 0.875, "model_id": "model-7"}"#,
                ),
                event(
                    "evt-0001",
                    "eval.promotion_requested",
                    "op\u{e9}rateur@example.com",
                    "mod\u{e8}le-\u{df}",
                    1_731_900_000_250,
                    r#"{"note": "A\u030a is not \u00c5", "emoji": "\ud83d\ude00 😀", "cjk": "評価", "rtl": "שלום", "\u00e9": "e-acute", "e": "plain e"}"#,
                ),
                event(
                    "evt-0002",
                    "eval.metrics_recorded",
                    "eval-engine",
                    "model-7",
                    1_731_900_001_000,
                    r#"{"ints": [0, -0, 1, -1, 10, 9007199254740991, 9007199254740993], "floats": [1.0, 4.50, 2e-3, 1E30, 1e21, 1e20, 1e-7, 0.000001, 5e-324, 333333333.33333329, 0.1, 1500000000000000.25, -1.5e-10], "max": 1.7976931348623157e308, "underflow": 1e-400}"#,
                ),
                event(
                    "evt-0003",
                    "policy.decision_recorded",
                    "sentinelnet",
                    "req-42",
                    1_731_900_002_000,
                    r#"{"z": {"y": [{"b": 2, "a": 1}, [], {}], "x": null}, "\ue000": "private use U+E000", "\ud83d\ude00": "U+1F600 sorts before U+E000 in UTF-16", "10": "ten", "1": "one", "A": "upper", "a": "lower", "": "empty key", "decision": {"allow": false, "reasons": ["risk:high", "eval:stale"], "risk": {"level": "critical", "score": 97.5}}}"#,
                ),
                event(
                    "evt-\"0004\"",
                    "audit.escape_test",
                    "tab\there",
                    "line1\nline2",
                    1_731_900_003_000,
                    r#"{"ctl": "\u0000\u0001\u001f", "ws": "\b\t\n\f\r", "quote": "\"quoted\" \\ backslash", "slash": "\/path/x", "del": "\u007f", "separators": "\u2028\u2029", "html": "</script>&amp;", "upper_hex": "\u00E9\u00e9"}"#,
                ),
                event(
                    "evt-0005",
                    "audit.emergency_signer",
                    "audit-chain",
                    "kms-2025-01",
                    1_731_900_004_000,
                    r#"{"kid": "proxy-2025-01", "previous_kid": "kms-2025-01", "signer_kind": "proxy", "proxy_url": "https://signing-proxy.internal/sign", "require_kms": false, "reason": "KMS throttling (ThrottlingException)"}"#,
                ),
                event(
                    "evt-0006",
                    "audit.note",
                    "operator",
                    "runbook",
                    0,
                    r#""a payload that is just a JSON string""#,
                ),
                event(
                    "evt-0007",
                    "alloc.state_changed",
                    "resource-allocator",
                    "alloc-77",
                    MAX_OCCURRED_AT_MS,
                    "{\n\t\"to\" : \"settled\" ,\r\n \"from\" : \"pending_finance\",\n \"amount_minor\": 125000, \"currency\": \"EUR\", \"meta\": { }\n}\n",
                ),
            ],
        ),
        (
            3,
            vec![
                event(
                    "rec-0001",
                    "audit.reconciliation",
                    "security@example.com",
                    "audit.chain/3",
                    1_731_990_000_000,
                    r#"{"gap": {"from_seq": 10, "to_seq": 12}, "remedy": "replayed from the S3 archive", "ticket": "SEC-1234"}"#,
                ),
                event(
                    "evt-1001",
                    "eval.promotion_denied",
                    "sentinelnet",
                    "model-9",
                    1_731_990_000_500,
                    r#"{"risk_level": "high", "scores": {"toxicity": 0.015, "jailbreak": 0.25, "overall": 1e-3}, "thresholds": [0.01, 0.2, 5E-4]}"#,
                ),
                event(
                    "evt-1002",
                    "finance.settlement_failed",
                    "resource-allocator",
                    "alloc-12",
                    1_731_990_001_000,
                    r#"{"allocation_id": "alloc-12", "amount_minor": 4200000, "currency": "USD", "error": {"code": 503, "retryable": true}}"#,
                ),
                event("evt-1003", "audit.heartbeat", "audit-chain", "partition-3", 1_731_990_002_000, "true"),
                event(
                    "evt-1004",
                    "eval.dataset_registered",
                    "eval-engine",
                    "dataset-ö",
                    1_731_990_003_000,
                    r#"[{"f": 1, "é": 2, "e": 3, "ö": 4, "E": 5}, [[[]]], -0.0, "\u20ac", {"nested": {"deeper": {"deepest": [1, {"k": "v"}]}}}]"#,
                ),
            ],
        ),
    ]
}

/// Payloads that have no canonical form; every implementation must reject them.
const INVALID_PAYLOADS: [(&str, &str); 8] = [
    (r#"{"a": 1, "a": 2}"#, "duplicate member name"),
    (r#"{"a": {"x": 1, "\u0078": 2}}"#, "duplicate member name (written with an escape)"),
    (r#"{"s": "\ud800"}"#, "lone surrogate"),
    (r#"[1e400]"#, "number overflows a double"),
    (r#"[NaN]"#, "NaN is not JSON"),
    (r#"{"a": 1,}"#, "trailing comma"),
    ("", "empty text is not JSON"),
    (r#"{"a": 1} {"b": 2}"#, "two documents"),
];

fn hx(h: &Hash) -> String {
    hex::encode(h)
}

fn generate() -> Value {
    let mut cases = Vec::new();
    let mut entry_hashes_by_partition: Vec<(u32, Vec<Hash>, i64)> = Vec::new();
    for (partition, events) in chains() {
        let mut head = ChainHead::genesis(partition);
        let mut hashes = Vec::new();
        let mut last_time = 0;
        for e in &events {
            let canonical = e.canonical_bytes().expect("vector events are valid");
            let appended = head.append(&canonical).unwrap();
            hashes.push(appended.entry_hash);
            last_time = e.occurred_at;
            cases.push(json!({
                "partition": partition,
                "seq": appended.seq,
                "event": e.to_json(),
                "canonical_hex": hex::encode(&canonical),
                "canonical_utf8": String::from_utf8(canonical).unwrap(),
                "prev_hash": hx(&appended.prev_hash),
                "entry_hash": hx(&appended.entry_hash),
            }));
        }
        entry_hashes_by_partition.push((partition, hashes, last_time));
    }

    let (p0, es0, _) = &entry_hashes_by_partition[0];
    let roots: Vec<Value> =
        (0..=es0.len()).map(|n| json!({"tree_size": n, "root": hx(&root(&es0[..n]))})).collect();
    let inclusion: Vec<Value> = [(5u64, 8u64), (2, 7), (6, 7), (0, 1)]
        .iter()
        .map(|&(i, n)| {
            let proof = inclusion_proof(es0, i, n).unwrap();
            let r = root(&es0[..n as usize]);
            verify_inclusion(&es0[i as usize], i, n, &proof, &r).unwrap();
            json!({
                "leaf_index": i, "tree_size": n, "entry_hash": hx(&es0[i as usize]),
                "proof": proof.iter().map(hx).collect::<Vec<_>>(), "root": hx(&r),
            })
        })
        .collect();
    let consistency: Vec<Value> = [(3u64, 8u64), (4, 8), (7, 8)]
        .iter()
        .map(|&(m, n)| {
            let proof = consistency_proof(es0, m, n).unwrap();
            let (rm, rn) = (root(&es0[..m as usize]), root(&es0[..n as usize]));
            verify_consistency(m, n, &rm, &rn, &proof).unwrap();
            json!({
                "old_size": m, "new_size": n, "old_root": hx(&rm), "new_root": hx(&rn),
                "proof": proof.iter().map(hx).collect::<Vec<_>>(),
            })
        })
        .collect();

    let checkpoints: Vec<Value> = entry_hashes_by_partition
        .iter()
        .map(|(partition, hashes, time_ms)| {
            let range = CompactRange::from_entry_hashes(hashes).unwrap();
            let r = range.root();
            let head = *hashes.last().unwrap();
            let body =
                checkpoint_body(CHECKPOINT_ORIGIN, *partition, range.size(), &r, &head, *time_ms)
                    .unwrap();
            json!({
                "origin": CHECKPOINT_ORIGIN,
                "partition": partition,
                "tree_size": range.size(),
                "root": hx(&r),
                "root_base64": b64::encode(&r),
                "head_hash": hx(&head),
                "time_ms": time_ms,
                "frontier": range.hashes().iter().map(hx).collect::<Vec<_>>(),
                "body_utf8": String::from_utf8(body.clone()).unwrap(),
                "body_hex": hex::encode(&body),
            })
        })
        .collect();

    let invalid: Vec<Value> = INVALID_PAYLOADS
        .iter()
        .map(|(payload, reason)| {
            assert!(canonicalize_str(payload).is_err(), "{payload:?} must be rejected");
            json!({"payload": payload, "reason": reason})
        })
        .collect();

    json!({
        "description": "Parity vectors for the evalstream audit hash chain v1 (RFC 8785 canonical bytes, entry hashes, RFC 6962 Merkle roots and proofs, checkpoint bodies). Specification: docs/audit-chain.md. Independent check: python3 tools/verify_audit_vectors.py. Regenerate: BLESS_VECTORS=1 cargo test -p evalstream-audit --test vectors.",
        "version": 1,
        "constants": {
            "entry_tag_hex": hex::encode(ENTRY_TAG),
            "genesis_tag_hex": hex::encode(GENESIS_TAG),
            "leaf_prefix_hex": hex::encode([LEAF_PREFIX]),
            "node_prefix_hex": hex::encode([NODE_PREFIX]),
            "empty_root": hx(&EMPTY_ROOT),
            "checkpoint_header": CHECKPOINT_HEADER,
            "checkpoint_origin": CHECKPOINT_ORIGIN,
            "genesis": entry_hashes_by_partition.iter()
                .map(|(p, _, _)| json!({"partition": p, "hash": hx(&genesis_hash(*p))}))
                .collect::<Vec<_>>(),
        },
        "cases": cases,
        "merkle": {
            "partition": p0,
            "roots": roots,
            "inclusion_proofs": inclusion,
            "consistency_proofs": consistency,
        },
        "checkpoints": checkpoints,
        "invalid_payloads": invalid,
    })
}

#[test]
fn parity_vectors_match_the_implementation() {
    let path = workspace().join(VECTORS);
    let generated = generate();
    if std::env::var("BLESS_VECTORS").is_ok_and(|v| v == "1") {
        let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
        std::fs::write(&path, text).unwrap();
        eprintln!("rewrote {}", path.display());
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with BLESS_VECTORS=1)", path.display()));
    let on_disk: Value = serde_json::from_str(&text).unwrap();
    if on_disk != generated {
        // Name the first differing case to make a regression readable.
        let (a, b) = (&on_disk["cases"], &generated["cases"]);
        let first = (0..b.as_array().map_or(0, Vec::len)).find(|&i| a[i] != b[i]);
        panic!(
            "{VECTORS} differs from what the implementation computes (first differing case: \
             {first:?}). If the change is intended, run BLESS_VECTORS=1 cargo test -p \
             evalstream-audit --test vectors and review the diff."
        );
    }
    let cases = generated["cases"].as_array().unwrap();
    assert!(cases.len() >= 12);
    // Every event in the file reproduces its canonical bytes from the file's own JSON form.
    for case in cases {
        let e = AuditEventJson::from_json(&case["event"]).unwrap();
        assert_eq!(hex::encode(e.canonical_bytes().unwrap()), case["canonical_hex"]);
    }
}

#[test]
fn the_independent_python_verifier_passes() {
    // Not skippable: the parity check is only worth something if it runs everywhere.
    let out = Command::new("python3")
        .arg("tools/verify_audit_vectors.py")
        .current_dir(workspace())
        .output()
        .expect("python3 must be installed to run tools/verify_audit_vectors.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(out.status.success(), "verify_audit_vectors.py failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("0 failed"), "{stdout}");
}
