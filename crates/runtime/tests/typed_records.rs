//! Typed records against the real schemas in `schemas/`: every shape the wire contract uses
//! (`["null", X]` unions of strings, enums and bytes, enums with defaults, a named type used
//! twice, `timestamp-millis`, `bytes`, nested records, arrays and maps of strings and doubles)
//! round-trips through serde and the codec both ways, and the bytes a struct encodes to are the
//! bytes the friendly JSON form (an independent path through the codec) encodes to.

use std::collections::BTreeMap;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use evalstream_runtime::record::{self, Record, RecordError};
use evalstream_runtime::testkit;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct EvalSubmission {
    submission_id: String,
    model_id: String,
    model_version: String,
    eval_suite: String,
    eval_suite_version: Option<String>,
    submitter: String,
    metrics: BTreeMap<String, f64>,
    dataset_id: Option<String>,
    artifact_uri: String,
    artifact_sha256: Option<String>,
    labels: BTreeMap<String, String>,
    submitted_at: i64,
    promotion: Option<PromotionAsk>,
    allocation: Option<AllocationAsk>,
}
impl Record for EvalSubmission {
    const SCHEMA: &'static str = "evalstream.eval.EvalSubmission";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PromotionStage {
    Staging,
    Canary,
    Production,
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RiskLevel {
    Low,
    Medium,
    High,
    Critical,
}

/// A record nested in a `["null", record]` union (EvalSubmission v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PromotionAsk {
    target_stage: PromotionStage,
    justification: Option<String>,
    risk_level_hint: Option<RiskLevel>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AllocationAsk {
    resource: ComputeResource,
    amount_minor: i64,
    currency: String,
    cost_center: String,
    purpose: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PromotionRequest {
    request_id: String,
    submission_id: String,
    model_id: String,
    model_version: String,
    target_stage: PromotionStage,
    requested_by: String,
    requested_at: i64,
    risk_level_hint: Option<RiskLevel>,
    justification: Option<String>,
}
impl Record for PromotionRequest {
    const SCHEMA: &'static str = "evalstream.eval.PromotionRequest";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PromotionStatus {
    Promoted,
    Denied,
    PendingPolicy,
    BestEffort,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PromotionOutcome {
    request_id: String,
    submission_id: String,
    model_id: String,
    model_version: String,
    target_stage: PromotionStage,
    outcome: PromotionStatus,
    reasons: Vec<String>,
    policy_version: Option<String>,
    decision_id: Option<String>,
    decided_at: i64,
}
impl Record for PromotionOutcome {
    const SCHEMA: &'static str = "evalstream.eval.PromotionOutcome";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ComputeResource {
    gpu_type: String,
    gpu_count: i32,
    hours: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AllocationRequest {
    allocation_id: String,
    requester: String,
    resource: ComputeResource,
    amount_minor: i64,
    currency: String,
    cost_center: String,
    requested_at: i64,
    purpose: Option<String>,
}
impl Record for AllocationRequest {
    const SCHEMA: &'static str = "evalstream.alloc.AllocationRequest";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AllocationState {
    PendingPolicy,
    PendingFinance,
    Settled,
    Denied,
    SettlementFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CauseKind {
    AllocationRequest,
    PolicyDecision,
    FinanceSettlement,
    Reconciliation,
    Other,
    Degraded,
}

/// `from_state` and `to_state` share the named enum `AllocationState` (a `Schema::Ref` the second
/// time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AllocationStateChanged {
    allocation_id: String,
    from_state: Option<AllocationState>,
    to_state: AllocationState,
    reason: Option<String>,
    ledger_entry_id: Option<String>,
    cause_kind: CauseKind,
    cause_id: String,
    amount_minor: Option<i64>,
    currency: Option<String>,
    changed_at: i64,
}
impl Record for AllocationStateChanged {
    const SCHEMA: &'static str = "evalstream.alloc.AllocationStateChanged";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FinanceSettlement {
    ledger_entry_id: String,
    allocation_id: String,
    amount_minor: i64,
    currency: String,
    #[serde(with = "record::bytes")]
    proof: Vec<u8>,
    kid: String,
    #[serde(with = "record::bytes")]
    signature: Vec<u8>,
    settled_at: i64,
}
impl Record for FinanceSettlement {
    const SCHEMA: &'static str = "evalstream.finance.FinanceSettlement";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SubjectKind {
    Promotion,
    Allocation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Decision {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PolicyDecision {
    decision_id: String,
    request_id: String,
    subject_kind: SubjectKind,
    decision: Decision,
    reasons: Vec<String>,
    policy_version: String,
    risk_level: RiskLevel,
    simulate: bool,
    decided_at: i64,
}
impl Record for PolicyDecision {
    const SCHEMA: &'static str = "evalstream.policy.PolicyDecision";
}

/// `["null", "bytes"]`, `["null", "long"]`: the audit checkpoint's optional signature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Checkpoint {
    tree_size: i64,
    #[serde(with = "record::bytes")]
    root: Vec<u8>,
    #[serde(with = "record::bytes")]
    head_hash: Vec<u8>,
    time_ms: i64,
    frontier: Vec<serde_bytes_vec::Bytes>,
    status: String,
    kid: Option<String>,
    #[serde(with = "record::bytes_opt")]
    signature: Option<Vec<u8>>,
    signer_kind: Option<String>,
}

/// A nested record inside `["null", record]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ChainRecord {
    partition: i32,
    kind: String,
    entry: Option<serde_json::Value>,
    checkpoint: Option<Checkpoint>,
}

mod serde_bytes_vec {
    use serde::{Deserialize, Serialize};

    /// One `bytes` item of an array.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(transparent)]
    pub struct Bytes(#[serde(with = "evalstream_runtime::record::bytes")] pub Vec<u8>);
}

/// Encodes `value`, decodes it back, and checks the bytes against the friendly JSON form.
fn round_trip<T: Record + PartialEq + std::fmt::Debug>(value: &T, friendly: serde_json::Value) {
    let codec = testkit::codec();
    let bytes = codec.encode_record("t", value).unwrap_or_else(|e| panic!("{}: {e}", T::SCHEMA));
    assert_eq!(&codec.decode_record::<T>(&bytes).unwrap(), value, "{}", T::SCHEMA);
    let via_json = codec.encode_json("t", T::SCHEMA, &friendly).expect("friendly JSON encodes");
    assert_eq!(bytes, via_json, "{}: typed and JSON encodings differ", T::SCHEMA);
}

#[test]
fn every_domain_type_agrees_with_its_schema() {
    testkit::check_record::<EvalSubmission>();
    testkit::check_record::<PromotionRequest>();
    testkit::check_record::<PromotionOutcome>();
    testkit::check_record::<AllocationRequest>();
    testkit::check_record::<AllocationStateChanged>();
    testkit::check_record::<FinanceSettlement>();
    testkit::check_record::<PolicyDecision>();
}

#[test]
fn maps_of_doubles_and_strings_options_and_timestamps() {
    let mut s = EvalSubmission {
        submission_id: "sub-1".into(),
        model_id: "m".into(),
        model_version: "v3".into(),
        eval_suite: "safety".into(),
        eval_suite_version: None,
        submitter: "ci".into(),
        metrics: [("accuracy".to_string(), 0.875), ("toxicity_rate".to_string(), 1e-3)].into(),
        dataset_id: Some("ds-9".into()),
        artifact_uri: "s3://r/1".into(),
        artifact_sha256: None,
        labels: BTreeMap::new(),
        submitted_at: 1_731_900_000_123,
        promotion: None,
        allocation: None,
    };
    round_trip(
        &s,
        json!({"submission_id":"sub-1","model_id":"m","model_version":"v3","eval_suite":"safety",
               "submitter":"ci","metrics":{"accuracy":0.875,"toxicity_rate":0.001},
               "dataset_id":"ds-9","artifact_uri":"s3://r/1","submitted_at":1_731_900_000_123i64}),
    );
    s.eval_suite_version = Some("2".into());
    s.labels.insert("team".into(), "evals".into());
    s.metrics.clear();
    round_trip(
        &s,
        json!({"submission_id":"sub-1","model_id":"m","model_version":"v3","eval_suite":"safety",
               "eval_suite_version":"2","submitter":"ci","metrics":{},"dataset_id":"ds-9",
               "artifact_uri":"s3://r/1","labels":{"team":"evals"},
               "submitted_at":"2024-11-18T03:20:00.123Z"}),
    );
}

#[test]
fn enums_optional_enums_and_arrays() {
    let mut r = PromotionRequest {
        request_id: "r-1".into(),
        submission_id: "sub-1".into(),
        model_id: "m".into(),
        model_version: "v3".into(),
        target_stage: PromotionStage::Canary,
        requested_by: "alice".into(),
        requested_at: 5,
        risk_level_hint: None,
        justification: None,
    };
    let base = json!({"request_id":"r-1","submission_id":"sub-1","model_id":"m","model_version":"v3",
                      "target_stage":"canary","requested_by":"alice","requested_at":5});
    round_trip(&r, base.clone());
    r.risk_level_hint = Some(RiskLevel::High);
    r.justification = Some("launch".into());
    let mut with_hint = base;
    with_hint["risk_level_hint"] = json!("high");
    with_hint["justification"] = json!("launch");
    round_trip(&r, with_hint);

    let o = PromotionOutcome {
        request_id: "r-1".into(),
        submission_id: "sub-1".into(),
        model_id: "m".into(),
        model_version: "v3".into(),
        target_stage: PromotionStage::Production,
        outcome: PromotionStatus::PendingPolicy,
        reasons: vec!["a".into(), "b".into()],
        policy_version: Some("p-7".into()),
        decision_id: None,
        decided_at: -1,
    };
    round_trip(
        &o,
        json!({"request_id":"r-1","submission_id":"sub-1","model_id":"m","model_version":"v3",
               "target_stage":"production","outcome":"pending_policy","reasons":["a","b"],
               "policy_version":"p-7","decided_at":-1}),
    );

    let d = PolicyDecision {
        decision_id: "d-1".into(),
        request_id: "r-1".into(),
        subject_kind: SubjectKind::Allocation,
        decision: Decision::Deny,
        reasons: vec![],
        policy_version: "p-7".into(),
        risk_level: RiskLevel::Low,
        simulate: true,
        decided_at: 9,
    };
    round_trip(
        &d,
        json!({"decision_id":"d-1","request_id":"r-1","subject_kind":"allocation","decision":"deny",
               "policy_version":"p-7","risk_level":"low","simulate":true,"decided_at":9}),
    );
}

#[test]
fn nested_records_a_named_type_used_twice_and_bytes() {
    let a = AllocationRequest {
        allocation_id: "al-1".into(),
        requester: "bob".into(),
        resource: ComputeResource { gpu_type: "h100".into(), gpu_count: 8, hours: 1.5 },
        amount_minor: 12_000,
        currency: "EUR".into(),
        cost_center: "cc-1".into(),
        requested_at: 7,
        purpose: Some("training".into()),
    };
    round_trip(
        &a,
        json!({"allocation_id":"al-1","requester":"bob",
               "resource":{"gpu_type":"h100","gpu_count":8,"hours":1.5},"amount_minor":12000,
               "currency":"EUR","cost_center":"cc-1","requested_at":7,"purpose":"training"}),
    );
    let c = AllocationStateChanged {
        allocation_id: "al-1".into(),
        from_state: Some(AllocationState::PendingFinance),
        to_state: AllocationState::SettlementFailed,
        reason: Some("amount mismatch".into()),
        ledger_entry_id: None,
        cause_kind: CauseKind::FinanceSettlement,
        cause_id: "le-1".into(),
        amount_minor: None,
        currency: None,
        changed_at: 8,
    };
    round_trip(
        &c,
        json!({"allocation_id":"al-1","from_state":"pending_finance","to_state":"settlement_failed",
               "reason":"amount mismatch","cause_kind":"finance_settlement","cause_id":"le-1",
               "changed_at":8}),
    );
    let f = FinanceSettlement {
        ledger_entry_id: "le-1".into(),
        allocation_id: "al-1".into(),
        amount_minor: 12_000,
        currency: "EUR".into(),
        proof: vec![0, 0xff, 7],
        kid: "fin-1".into(),
        signature: vec![],
        settled_at: 9,
    };
    round_trip(
        &f,
        json!({"ledger_entry_id":"le-1","allocation_id":"al-1","amount_minor":12000,
               "currency":"EUR","proof":{"base64":"AP8H"},"kid":"fin-1","signature":{"base64":""},
               "settled_at":9}),
    );
}

#[test]
fn a_record_inside_a_union_with_optional_bytes_and_an_array_of_bytes() {
    let codec = testkit::codec();
    let cp = Checkpoint {
        tree_size: 3,
        root: vec![1; 32],
        head_hash: vec![2; 32],
        time_ms: 10,
        frontier: vec![serde_bytes_vec::Bytes(vec![3; 32]), serde_bytes_vec::Bytes(vec![4; 32])],
        status: "signed".into(),
        kid: Some("k".into()),
        signature: Some(vec![0x30, 0x44]),
        signer_kind: None,
    };
    let rec =
        ChainRecord { partition: 1, kind: "checkpoint".into(), entry: None, checkpoint: Some(cp) };
    let bytes = codec
        .encode("audit.chain", "evalstream.audit.ChainRecord", &record::to_avro(&rec).unwrap())
        .unwrap();
    let decoded = codec.decode(&bytes).unwrap();
    let back: ChainRecord = record::from_avro(&decoded.value).unwrap();
    assert_eq!(back, rec);
    let mut unsigned = rec.clone();
    if let Some(c) = unsigned.checkpoint.as_mut() {
        c.signature = None;
        c.kid = None;
    }
    let bytes = codec
        .encode("audit.chain", "evalstream.audit.ChainRecord", &record::to_avro(&unsigned).unwrap())
        .unwrap();
    let back: ChainRecord = record::from_avro(&codec.decode(&bytes).unwrap().value).unwrap();
    assert_eq!(back, unsigned);
}

/// A newer writer's enum symbol this binary does not know reads as the enum's default (the
/// schema sets `unknown`), so the Rust enum needs that variant and never sees the new one.
#[test]
fn an_unknown_symbol_from_a_newer_writer_reads_as_the_enum_default() {
    let store = evalstream_runtime::codec::SchemaStore::bundled().unwrap();
    let current = store.schema(PromotionRequest::SCHEMA).unwrap().clone();
    let newer_text = store.current(PromotionRequest::SCHEMA).unwrap().source().replace(
        r#""canary", "production", "unknown""#,
        r#""canary", "shadow", "production", "unknown""#,
    );
    assert!(newer_text.contains("shadow"), "the test edits the stage symbols");
    let newer = Schema::parse_str(&newer_text).unwrap();
    let value = store
        .conform(
            PromotionRequest::SCHEMA,
            &record::to_avro(&PromotionRequest {
                request_id: "r".into(),
                submission_id: "s".into(),
                model_id: "m".into(),
                model_version: "v".into(),
                target_stage: PromotionStage::Canary,
                requested_by: "a".into(),
                requested_at: 1,
                risk_level_hint: Some(RiskLevel::Low),
                justification: None,
            })
            .unwrap(),
        )
        .unwrap();
    // The same record as the newer writer would send it: stage "shadow".
    let apache_avro::types::Value::Record(mut fields) = value else { panic!("record") };
    fields[4].1 = apache_avro::types::Value::Enum(2, "shadow".into());
    let mut body = Vec::new();
    GenericDatumWriter::builder(&newer)
        .build()
        .unwrap()
        .write_value_ref(&mut body, &apache_avro::types::Value::Record(fields))
        .unwrap();
    let written =
        GenericDatumReader::builder(&newer).build().unwrap().read_value(&mut &body[..]).unwrap();
    let resolved = written.resolve(&current).unwrap();
    let read: PromotionRequest = record::from_avro(&resolved).unwrap();
    assert_eq!(read.target_stage, PromotionStage::Unknown);
    assert_eq!(read.risk_level_hint, Some(RiskLevel::Low));
}

#[derive(Debug, Serialize, Deserialize)]
struct Unsigned {
    key: String,
    amount: u64,
}
impl Record for Unsigned {
    const SCHEMA: &'static str = "evalstream.runtime.TotalsInput";
}

#[derive(Debug, Serialize, Deserialize)]
struct Partial {
    key: String,
}
impl Record for Partial {
    const SCHEMA: &'static str = "evalstream.runtime.TotalsInput";
}

fn expect_err<T: DeserializeOwned + std::fmt::Debug>(v: &apache_avro::types::Value) -> String {
    record::from_avro::<T>(v).expect_err("mismatch").to_string()
}

#[test]
fn mismatches_are_errors_that_say_what_is_wrong() {
    let codec = testkit::codec();
    // u64 is not a long: serde writes it as an 8-byte fixed, and the codec names the field.
    let e = codec.encode_record("t", &Unsigned { key: "k".into(), amount: 1 }).unwrap_err();
    assert!(matches!(&e, RecordError::Codec(_)), "{e}");
    assert!(e.to_string().contains("amount") && e.to_string().contains("expected long"), "{e}");
    // A struct missing a required field cannot be written...
    let e = codec.encode_record("t", &Partial { key: "k".into() }).unwrap_err();
    assert!(e.to_string().contains("amount: missing required field"), "{e}");
    // ...but may read only the fields it needs.
    let bytes = codec
        .encode_json("t", "evalstream.runtime.TotalsInput", &json!({"key":"k","amount":3}))
        .unwrap();
    assert_eq!(codec.decode_record::<Partial>(&bytes).unwrap().key, "k");
    // Another schema's bytes, and a field of the wrong type.
    let e = codec.decode_record::<PolicyDecision>(&bytes).unwrap_err();
    assert_eq!(
        e.to_string(),
        "expected evalstream.policy.PolicyDecision, got evalstream.runtime.TotalsInput"
    );
    let decoded = codec.decode(&bytes).unwrap();
    let e = expect_err::<EvalSubmission>(&decoded.value);
    assert!(e.contains("missing field"), "{e}");
    assert!(e.len() < 400, "messages are bounded: {e}");
}
