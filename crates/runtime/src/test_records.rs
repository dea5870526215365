//! The runtime's own copy of the totals processor's output record, for its unit tests (the
//! runtime cannot depend on `processors/totals`): the hot record of the benchmark, so the codec's
//! fast paths are tested on the shape they are measured on.

use serde::{Deserialize, Serialize};

use crate::record::Record;

/// `evalstream.runtime.TotalsUpdate`, field for field as `processors/totals` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TotalsUpdate {
    pub(crate) key: String,
    pub(crate) amount: i64,
    pub(crate) total: i64,
    pub(crate) source_topic: String,
    pub(crate) source_partition: i32,
    pub(crate) source_offset: i64,
}

impl Record for TotalsUpdate {
    const SCHEMA: &'static str = "evalstream.runtime.TotalsUpdate";
}

impl TotalsUpdate {
    /// An update of `key` to `total` by `amount`, from offset 41 of `totals.input` partition 2.
    pub(crate) fn of(key: &str, amount: i64, total: i64) -> TotalsUpdate {
        TotalsUpdate {
            key: key.into(),
            amount,
            total,
            source_topic: "totals.input".into(),
            source_partition: 2,
            source_offset: 41,
        }
    }
}
