//! The typed form of the domain's Avro records (`schemas/evalstream/{eval,alloc,policy,finance,
//! control,audit}`), following the mapping in `evalstream_runtime::record`.
//!
//! Optional fields (`["null", T]` with default `null`) and defaulted collections are left out
//! when absent or empty (`skip_serializing_if`): the codec fills the schema default on the way
//! out, and [`crate::content_digest`] then does not depend on fields a record does not use.

use std::collections::BTreeMap;

use evalstream_runtime::record::{self, Record};
use serde::{Deserialize, Serialize};

macro_rules! record {
    ($t:ty, $name:literal) => {
        impl Record for $t {
            const SCHEMA: &'static str = $name;
        }
    };
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ─── Eval Engine ────────────────────────────────────────────────────────────────────────────────

/// `evalstream.eval.PromotionStage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionStage {
    /// Staging.
    Staging,
    /// Canary.
    Canary,
    /// Production: never eligible for degraded-mode best effort.
    Production,
    /// A stage this reader does not know (the schema default); rejected by validation.
    Unknown,
}

/// `evalstream.policy.RiskLevel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RiskLevel {
    /// Low: the only level eligible for degraded-mode best effort.
    Low,
    /// Medium.
    Medium,
    /// High.
    High,
    /// Critical (also what an unknown level reads as).
    Critical,
}

/// `evalstream.eval.PromotionAsk`: the promotion a submission asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionAsk {
    /// Stage to promote to.
    pub target_stage: PromotionStage,
    /// Free-text justification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
    /// The submitter's risk estimate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_level_hint: Option<RiskLevel>,
}

/// `evalstream.alloc.ComputeResource`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeResource {
    /// Accelerator model.
    pub gpu_type: String,
    /// Accelerators at the same time.
    pub gpu_count: i32,
    /// Duration in hours (informational).
    pub hours: f64,
}

/// `evalstream.eval.AllocationAsk`: the allocation a submission asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationAsk {
    /// What is allocated.
    pub resource: ComputeResource,
    /// Price in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Cost center charged.
    pub cost_center: String,
    /// Free-text purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// `evalstream.eval.EvalSubmission` (topics `eval.submissions`, `eval.submissions.accepted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSubmission {
    /// Unique id; the record key.
    pub submission_id: String,
    /// Model id.
    pub model_id: String,
    /// Model version evaluated.
    pub model_version: String,
    /// Evaluation suite.
    pub eval_suite: String,
    /// Suite version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_suite_version: Option<String>,
    /// Who submitted.
    pub submitter: String,
    /// Scores by metric name.
    pub metrics: BTreeMap<String, f64>,
    /// Data set id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    /// Report location.
    pub artifact_uri: String,
    /// Report digest, lower-case hex SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_sha256: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Event time, ms since the epoch.
    pub submitted_at: i64,
    /// Promotion asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionAsk>,
    /// Allocation asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<AllocationAsk>,
}
record!(EvalSubmission, "evalstream.eval.EvalSubmission");

/// `evalstream.eval.PromotionRequest` (topic `eval.promotion-requests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionRequest {
    /// Unique id; the record key.
    pub request_id: String,
    /// The submission behind it.
    pub submission_id: String,
    /// Model id.
    pub model_id: String,
    /// Model version.
    pub model_version: String,
    /// Stage asked for.
    pub target_stage: PromotionStage,
    /// Who asked.
    pub requested_by: String,
    /// Event time.
    pub requested_at: i64,
    /// Risk hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk_level_hint: Option<RiskLevel>,
    /// Justification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<String>,
}
record!(PromotionRequest, "evalstream.eval.PromotionRequest");

/// `evalstream.eval.PromotionStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromotionStatus {
    /// Allowed by a policy decision.
    Promoted,
    /// Denied by a policy decision.
    Denied,
    /// Waiting for a decision.
    PendingPolicy,
    /// Let through provisionally in degraded mode.
    BestEffort,
}

impl PromotionStatus {
    /// The schema symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            PromotionStatus::Promoted => "promoted",
            PromotionStatus::Denied => "denied",
            PromotionStatus::PendingPolicy => "pending_policy",
            PromotionStatus::BestEffort => "best_effort",
        }
    }
}

/// `evalstream.eval.PromotionOutcome` (topic `eval.promotions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionOutcome {
    /// The request answered; the record key.
    pub request_id: String,
    /// The submission behind it.
    pub submission_id: String,
    /// Model id.
    pub model_id: String,
    /// Model version.
    pub model_version: String,
    /// Stage asked for.
    pub target_stage: PromotionStage,
    /// The status reached.
    pub outcome: PromotionStatus,
    /// Reasons (the decision's, or the degraded-mode note).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Deciding policy version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_version: Option<String>,
    /// Deciding decision id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
    /// Event time of the cause.
    pub decided_at: i64,
}
record!(PromotionOutcome, "evalstream.eval.PromotionOutcome");

// ─── Resource Allocator ─────────────────────────────────────────────────────────────────────────

/// `evalstream.alloc.AllocationRequest` (topic `alloc.requests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationRequest {
    /// Unique id; the record key.
    pub allocation_id: String,
    /// Who asks.
    pub requester: String,
    /// What is allocated.
    pub resource: ComputeResource,
    /// Price in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Cost center.
    pub cost_center: String,
    /// Event time.
    pub requested_at: i64,
    /// Purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}
record!(AllocationRequest, "evalstream.alloc.AllocationRequest");

/// `evalstream.alloc.AllocationState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocationState {
    /// Waiting for a policy decision.
    PendingPolicy,
    /// Approved; waiting for Finance to settle it.
    PendingFinance,
    /// Paid, with a verified ledger proof.
    Settled,
    /// Denied by policy.
    Denied,
    /// Finance's settlement did not match (amount or currency), or reconciliation found it wrong.
    SettlementFailed,
}

impl AllocationState {
    /// Every state, in schema order.
    pub const ALL: [AllocationState; 5] = [
        AllocationState::PendingPolicy,
        AllocationState::PendingFinance,
        AllocationState::Settled,
        AllocationState::Denied,
        AllocationState::SettlementFailed,
    ];

    /// The schema symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            AllocationState::PendingPolicy => "pending_policy",
            AllocationState::PendingFinance => "pending_finance",
            AllocationState::Settled => "settled",
            AllocationState::Denied => "denied",
            AllocationState::SettlementFailed => "settlement_failed",
        }
    }

    /// How far along the life cycle the state is: pending_policy 1, pending_finance 2, the
    /// others 3 (unknown is 0). A correction expecting a state of a higher stage than the
    /// allocation's is "not yet" (retried); of a lower or equal stage but another state, stale.
    pub fn stage(self) -> u8 {
        match self {
            AllocationState::PendingPolicy => 1,
            AllocationState::PendingFinance => 2,
            AllocationState::Settled
            | AllocationState::Denied
            | AllocationState::SettlementFailed => 3,
        }
    }
}

impl std::fmt::Display for AllocationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for AllocationState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AllocationState::ALL.into_iter().find(|x| x.as_str() == s).ok_or_else(|| {
            format!(
                "unknown allocation state {s:?} (known: pending_policy, pending_finance, settled, \
                 denied, settlement_failed)"
            )
        })
    }
}

/// `evalstream.alloc.CauseKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    /// The allocation request itself.
    AllocationRequest,
    /// A policy decision.
    PolicyDecision,
    /// A Finance settlement.
    FinanceSettlement,
    /// A reconciliation correction.
    Reconciliation,
    /// Anything else (also what an unknown kind reads as).
    Other,
    /// Degraded-mode best effort.
    Degraded,
}

impl CauseKind {
    /// The schema symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            CauseKind::AllocationRequest => "allocation_request",
            CauseKind::PolicyDecision => "policy_decision",
            CauseKind::FinanceSettlement => "finance_settlement",
            CauseKind::Reconciliation => "reconciliation",
            CauseKind::Other => "other",
            CauseKind::Degraded => "degraded",
        }
    }
}

/// `evalstream.alloc.AllocationStateChanged` (topic `alloc.state`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationStateChanged {
    /// The allocation; the record key.
    pub allocation_id: String,
    /// State before (none for the first transition).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_state: Option<AllocationState>,
    /// State after.
    pub to_state: AllocationState,
    /// Why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Settling ledger entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_entry_id: Option<String>,
    /// Kind of cause.
    pub cause_kind: CauseKind,
    /// Id of the cause.
    pub cause_id: String,
    /// Approved amount (transitions into pending_finance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    /// Currency of the approved amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Event time of the cause.
    pub changed_at: i64,
}
record!(AllocationStateChanged, "evalstream.alloc.AllocationStateChanged");

/// `evalstream.alloc.AllocationCorrection` (topic `alloc.corrections`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationCorrection {
    /// Unique id; deduplicated on and cited as the transition's cause id.
    pub correction_id: String,
    /// The allocation; the record key.
    pub allocation_id: String,
    /// The state the writer saw.
    pub expected_state: AllocationState,
    /// The state to move to.
    pub to_state: AllocationState,
    /// `reconciliation` or `policy_decision`.
    pub cause_kind: CauseKind,
    /// Run id or decision id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause_ref: Option<String>,
    /// Ledger entry (corrections to settled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_entry_id: Option<String>,
    /// Why.
    pub reason: String,
    /// Who issued it.
    pub actor: String,
    /// When.
    pub issued_at: i64,
}
record!(AllocationCorrection, "evalstream.alloc.AllocationCorrection");

// ─── SentinelNet ────────────────────────────────────────────────────────────────────────────────

/// `evalstream.policy.SubjectKind`: what a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A promotion request.
    Promotion,
    /// An allocation request.
    Allocation,
}

impl SubjectKind {
    /// The schema symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Promotion => "promotion",
            SubjectKind::Allocation => "allocation",
        }
    }
}

impl std::str::FromStr for SubjectKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "promotion" => Ok(SubjectKind::Promotion),
            "allocation" => Ok(SubjectKind::Allocation),
            _ => Err(format!("unknown subject kind {s:?} (promotion or allocation)")),
        }
    }
}

/// `evalstream.policy.Decision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Allow.
    Allow,
    /// Deny (also what an unknown verdict reads as).
    Deny,
}

impl Decision {
    /// The schema symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            _ => Err(format!("unknown decision {s:?} (allow or deny)")),
        }
    }
}

/// `evalstream.policy.PolicyDecision` (topic `policy.decisions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyDecision {
    /// Unique id; deduplicated on.
    pub decision_id: String,
    /// The request decided; the record key.
    pub request_id: String,
    /// Promotion or allocation.
    pub subject_kind: SubjectKind,
    /// Allow or deny.
    pub decision: Decision,
    /// Reasons, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Policy bundle version.
    pub policy_version: String,
    /// Assigned risk.
    pub risk_level: RiskLevel,
    /// Dry run: never changes state.
    #[serde(default, skip_serializing_if = "is_false")]
    pub simulate: bool,
    /// Event time.
    pub decided_at: i64,
}
record!(PolicyDecision, "evalstream.policy.PolicyDecision");

// ─── Finance ────────────────────────────────────────────────────────────────────────────────────

/// `evalstream.finance.FinanceSettlement` (topic `finance.settlements`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinanceSettlement {
    /// Ledger entry id; deduplicated on.
    pub ledger_entry_id: String,
    /// The allocation paid for; the record key.
    pub allocation_id: String,
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// The proof bytes Finance signed (see [`crate::proof`]).
    #[serde(with = "record::bytes")]
    pub proof: Vec<u8>,
    /// Finance key id.
    pub kid: String,
    /// DER ECDSA P-256 signature over `proof`.
    #[serde(with = "record::bytes")]
    pub signature: Vec<u8>,
    /// When the entry was booked.
    pub settled_at: i64,
}
record!(FinanceSettlement, "evalstream.finance.FinanceSettlement");

// ─── Control ────────────────────────────────────────────────────────────────────────────────────

/// `evalstream.control.SwitchKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SwitchKind {
    /// Degraded policy mode (runbook option A).
    Degraded,
    /// No allocation approved or settled while on.
    FreezeAllocations,
}

impl SwitchKind {
    /// The schema symbol.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchKind::Degraded => "degraded",
            SwitchKind::FreezeAllocations => "freeze_allocations",
        }
    }
}

/// `evalstream.control.Switch` (topic `evalstream.switches`, one copy per partition).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    /// Operator command id, the same in every copy.
    pub command_id: String,
    /// Which switch.
    pub switch: SwitchKind,
    /// On or off.
    pub on: bool,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// When.
    pub issued_at: i64,
}
record!(Switch, "evalstream.control.Switch");

// ─── Audit ──────────────────────────────────────────────────────────────────────────────────────

/// `evalstream.audit.AuditEvent` (topic `audit.events`, keyed by `subject`): the audit crate's
/// typed record, the one the chain reads.
pub use evalstream_audit::chain::AuditEventJson as AuditEvent;

#[cfg(test)]
mod tests {
    use evalstream_runtime::testkit::check_record;

    use super::*;

    #[test]
    fn every_record_type_agrees_with_its_schema() {
        check_record::<EvalSubmission>();
        check_record::<PromotionRequest>();
        check_record::<PromotionOutcome>();
        check_record::<AllocationRequest>();
        check_record::<AllocationStateChanged>();
        check_record::<AllocationCorrection>();
        check_record::<PolicyDecision>();
        check_record::<FinanceSettlement>();
        check_record::<Switch>();
        check_record::<AuditEvent>();
    }

    #[test]
    fn states_parse_and_have_stages() {
        for s in AllocationState::ALL {
            assert_eq!(s.as_str().parse::<AllocationState>(), Ok(s));
        }
        assert!(AllocationState::PendingPolicy.stage() < AllocationState::PendingFinance.stage());
        assert_eq!(AllocationState::Settled.stage(), AllocationState::Denied.stage());
        assert!("paid".parse::<AllocationState>().is_err());
    }
}
