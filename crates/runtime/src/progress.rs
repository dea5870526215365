//! The typed progress marker: the value of a marker record in a processor's changelog (key
//! [`crate::state::marker_changelog_key`]), written last in every transaction for each input
//! partition it moved. Restores and independent verifiers read it; docs/exactly-once.md says why.

use serde::{Deserialize, Serialize};

use crate::record::Record;

/// `evalstream.runtime.ProgressMarker`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressMarker {
    /// Input topic the marker covers (physical name).
    pub topic: String,
    /// Input partition the marker covers.
    pub partition: i32,
    /// Next input offset to process (last processed + 1).
    pub next_offset: i64,
    /// Id of the transaction that wrote the marker.
    pub txn: String,
    /// Id of the processor instance that wrote the marker.
    pub instance: String,
}

impl Record for ProgressMarker {
    const SCHEMA: &'static str = "evalstream.runtime.ProgressMarker";
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value;

    use super::*;
    use crate::testkit;

    #[test]
    fn matches_its_schema_and_the_engines_bytes() {
        testkit::check_record::<ProgressMarker>();
        let marker = ProgressMarker {
            topic: "p.totals.input".into(),
            partition: 3,
            next_offset: 1_000_001,
            txn: "inst-0000abcd-7".into(),
            instance: "inst".into(),
        };
        // The engine builds its markers as this Value; typed markers must be the same bytes.
        let by_hand = Value::Record(vec![
            ("topic".into(), Value::String(marker.topic.clone())),
            ("partition".into(), Value::Int(3)),
            ("next_offset".into(), Value::Long(1_000_001)),
            ("txn".into(), Value::String(marker.txn.clone())),
            ("instance".into(), Value::String(marker.instance.clone())),
        ]);
        let codec = testkit::codec();
        let typed = codec.encode_record("c", &marker).unwrap();
        assert_eq!(typed, codec.encode("c", ProgressMarker::SCHEMA, &by_hand).unwrap());
        assert_eq!(codec.decode_record::<ProgressMarker>(&typed).unwrap(), marker);
        assert_eq!(crate::engine::decode_marker(codec, &typed), Ok(1_000_001));
    }
}
