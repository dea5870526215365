//! Prometheus metrics (STUB — being implemented).
#![allow(missing_docs, dead_code, unused_variables)]
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Metrics {}

impl Metrics {
    pub fn new(processor: &str) -> Arc<Self> {
        Arc::new(Metrics {})
    }
    pub fn record_in(&self, topic: &str) {}
    pub fn records_out(&self, topic: &str, n: u64) {}
    pub fn dead_lettered(&self, topic: &str, class: &str) {}
    pub fn retried(&self, topic: &str) {}
    pub fn txn_committed(&self, latency: Duration) {}
    pub fn txn_aborted(&self, reason: &str) {}
    pub fn rebalance(&self, kind: &str) {}
    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {}
    pub fn encode(&self) -> String {
        String::new()
    }
}
