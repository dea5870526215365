//! Operator endpoints (STUB — being implemented).
#![allow(missing_docs, dead_code, unused_variables)]
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct Health {}

impl Health {
    pub fn new(processor: &str) -> Arc<Self> {
        Arc::new(Health {})
    }
    pub fn set_kafka(&self, ok: bool, detail: &str) {}
    pub fn set_assignment(&self, partitions: usize) {}
    pub fn set_restoring(&self, restoring: bool) {}
    pub fn set_dependency(&self, name: &str, ok: bool, detail: &str) {}
    pub fn set_mode(&self, mode: &str) {}
    pub fn set_stopped(&self, reason: &str) {}
}
