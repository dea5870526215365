//! What the policy processor keeps per partition (JSON in the changelog, readable with
//! `evalstream consume evalstream.policy.changelog`), and under which keys.
//!
//! | key | value |
//! | --- | --- |
//! | `req/<kind>/<id>` | [`Request`]: a registered request and where it stands |
//! | `pending/<kind>/<id>` | `requested_at` of every request in `pending_policy` (an index: gauges and degraded sweeps read it instead of every request ever registered) |
//! | `early/<kind>/<id>` | the first real decision that arrived before its request |
//! | `dec/<decision_id>` | digest of every decision consumed (duplicates and conflicts) |
//! | `held/<seq>` | a real allocation decision held while allocations are frozen, in arrival order |
//! | `seq/held` | the next `held/` sequence number |
//! | `switch/degraded`, `switch/freeze` | [`SwitchState`] |
//! | `cmd/<command_id>` | switch commands applied (a copy requeued later is a no-op) |

use evalstream_domain::records::{PolicyDecision, PromotionStage, RiskLevel, SubjectKind};
use serde::{Deserialize, Serialize};

/// Where a request stands in the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for a decision (fail closed).
    PendingPolicy,
    /// Promotion allowed.
    Promoted,
    /// Denied.
    Denied,
    /// Promotion let through in degraded mode, no decision yet.
    BestEffort,
    /// Allocation approved (by a decision, or best effort in degraded mode).
    PendingFinance,
}

impl Status {
    /// The name used in outputs and audit payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::PendingPolicy => "pending_policy",
            Status::Promoted => "promoted",
            Status::Denied => "denied",
            Status::BestEffort => "best_effort",
            Status::PendingFinance => "pending_finance",
        }
    }
}

/// What a promotion request says that outcomes repeat and degraded mode looks at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromotionFacts {
    /// The submission behind it.
    pub submission_id: String,
    /// Model id.
    pub model_id: String,
    /// Model version.
    pub model_version: String,
    /// Stage asked for.
    pub target_stage: PromotionStage,
    /// The requester's risk hint.
    pub risk_level_hint: Option<RiskLevel>,
}

/// What an allocation request says that transitions repeat and degraded mode looks at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationFacts {
    /// Amount asked for, minor units.
    pub amount_minor: i64,
    /// Currency.
    pub currency: String,
}

/// A registered request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Promotion or allocation.
    pub kind: SubjectKind,
    /// Request id (promotion) or allocation id.
    pub id: String,
    /// Content digest: the same id with other content is a conflict.
    pub digest: String,
    /// Where it stands.
    pub status: Status,
    /// Event time of the request.
    pub requested_at: i64,
    /// Who asked (the actor of the request's audit facts).
    pub requested_by: String,
    /// Promotion details (kind promotion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionFacts>,
    /// Allocation details (kind allocation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<AllocationFacts>,
    /// The real decision that decided it (or that decides it when released from the freeze).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// A real decision held while allocations are frozen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// The degraded-mode switch command that let it through as best effort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_effort: Option<String>,
}

/// A switch as a processor partition last applied it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchState {
    /// On or off.
    pub on: bool,
    /// The command that set it.
    pub command_id: String,
    /// The operator who issued it.
    pub actor: String,
}

/// A decision that waits: before its request (`early/`) or during a freeze (`held/`).
pub type Waiting = PolicyDecision;

/// `req/<kind>/<id>`.
pub fn request_key(kind: SubjectKind, id: &str) -> String {
    format!("req/{}/{id}", kind.as_str())
}

/// `pending/<kind>/<id>`.
pub fn pending_key(kind: SubjectKind, id: &str) -> String {
    format!("pending/{}/{id}", kind.as_str())
}

/// `early/<kind>/<id>`.
pub fn early_key(kind: SubjectKind, id: &str) -> String {
    format!("early/{}/{id}", kind.as_str())
}

/// `dec/<decision_id>`.
pub fn decision_key(decision_id: &str) -> String {
    format!("dec/{decision_id}")
}

/// `held/<seq>`, zero-padded so that keys sort in arrival order.
pub fn held_key(seq: u64) -> String {
    format!("held/{seq:020}")
}

/// Next `held/` sequence number.
pub const HELD_SEQ: &str = "seq/held";
/// Degraded mode.
pub const DEGRADED: &str = "switch/degraded";
/// Allocations frozen.
pub const FREEZE: &str = "switch/freeze";

/// `cmd/<command_id>`.
pub fn command_key(command_id: &str) -> String {
    format!("cmd/{command_id}")
}

/// The other kind.
pub fn other(kind: SubjectKind) -> SubjectKind {
    match kind {
        SubjectKind::Promotion => SubjectKind::Allocation,
        SubjectKind::Allocation => SubjectKind::Promotion,
    }
}
