//! What the settlement processor keeps per partition (JSON in `evalstream.settlement.changelog`;
//! `evalstream alloc list` and `evalstream reconcile` read it from there).
//!
//! | key | value |
//! | --- | --- |
//! | `alloc/<allocation_id>` | [`Allocation`]: every allocation's current state, learnt from `alloc.state` and from this processor's own transitions |
//! | `n/<state>` | number of allocations in that state (gauges without a scan) |
//! | `pf/<allocation_id>` | `since` of every allocation in `pending_finance` (the oldest-age gauge) |
//! | `held/<seq>` | [`HeldSettlement`]: a verified settlement held while allocations are frozen |
//! | `seq/held` | the next `held/` sequence number |
//! | `switch/freeze` | whether allocations are frozen, and by which command |
//! | `cmd/<command_id>` | switch commands applied |

use std::collections::BTreeMap;

use evalstream_domain::records::AllocationState;
use serde::{Deserialize, Serialize};

/// An allocation as the settlement processor knows it. Serialized as JSON into the changelog:
/// this is the format `evalstream alloc list` reads, so fields are only ever added (with a
/// default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Allocation {
    /// The allocation id.
    pub allocation_id: String,
    /// Its current state.
    pub state: AllocationState,
    /// `changed_at` of the transition into the current state (ms since the epoch).
    pub since: i64,
    /// Approved amount (from the transition into `pending_finance`).
    #[serde(default)]
    pub amount_minor: Option<i64>,
    /// Approved currency.
    #[serde(default)]
    pub currency: Option<String>,
    /// The ledger entry of the last settlement transition (the settling one when `settled`).
    #[serde(default)]
    pub ledger_entry_id: Option<String>,
    /// Why the last transition happened, when it says.
    #[serde(default)]
    pub reason: Option<String>,
    /// `<cause_kind>:<cause_id>` of the last transition.
    #[serde(default)]
    pub cause: String,
    /// `<to_state>:<cause_kind>:<cause_id>` of every transition applied: recognises this
    /// processor's own transitions when they come back on `alloc.state`, and duplicates.
    #[serde(default)]
    pub history: Vec<String>,
    /// Ledger entry id → content digest of every settlement consumed for this allocation.
    #[serde(default)]
    pub settlements: BTreeMap<String, String>,
    /// A verified settlement held while allocations are frozen.
    #[serde(default)]
    pub held: Option<String>,
    /// Corrections consumed (applied or stale).
    #[serde(default)]
    pub corrections: Vec<String>,
}

impl Allocation {
    /// An allocation first seen in `state` at `since`.
    pub fn new(allocation_id: &str, state: AllocationState, since: i64) -> Self {
        Allocation {
            allocation_id: allocation_id.to_string(),
            state,
            since,
            amount_minor: None,
            currency: None,
            ledger_entry_id: None,
            reason: None,
            cause: String::new(),
            history: Vec::new(),
            settlements: BTreeMap::new(),
            held: None,
            corrections: Vec::new(),
        }
    }
}

/// A settlement held during a freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldSettlement {
    /// The allocation.
    pub allocation_id: String,
    /// The ledger entry.
    pub ledger_entry_id: String,
    /// Its booking time (the event time of the transition when released).
    pub settled_at: i64,
    /// The allocation's state when the settlement was held: released only if it is still in
    /// it (a correction applied during the freeze wins over a held settlement).
    pub expected: AllocationState,
}

/// Whether allocations are frozen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freeze {
    /// Frozen.
    pub on: bool,
    /// The command that set it.
    pub command_id: String,
}

/// Prefix of allocation keys.
pub const ALLOC_PREFIX: &str = "alloc/";

/// `alloc/<id>`.
pub fn alloc_key(id: &str) -> String {
    format!("{ALLOC_PREFIX}{id}")
}

/// `n/<state>`.
pub fn count_key(state: AllocationState) -> String {
    format!("n/{state}")
}

/// `pf/<id>`.
pub fn pending_finance_key(id: &str) -> String {
    format!("pf/{id}")
}

/// `held/<seq>`, zero-padded so keys sort in arrival order.
pub fn held_key(seq: u64) -> String {
    format!("held/{seq:020}")
}

/// Next `held/` sequence number.
pub const HELD_SEQ: &str = "seq/held";
/// The freeze switch.
pub const FREEZE: &str = "switch/freeze";

/// `cmd/<command_id>`.
pub fn command_key(id: &str) -> String {
    format!("cmd/{id}")
}

/// The state entries of a changelog key/value pair that are allocations: the id and the
/// decoded value (for readers of the changelog such as `evalstream alloc list`).
pub fn decode_allocation(
    key: &[u8],
    value: &[u8],
) -> Option<Result<Allocation, serde_json::Error>> {
    key.strip_prefix(ALLOC_PREFIX.as_bytes())?;
    Some(serde_json::from_slice(value))
}
