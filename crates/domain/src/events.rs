//! Audit events of the domain: every state change a domain processor makes is also an
//! [`AuditEvent`] on `audit.events`, so the signed audit chain covers the domain.
//!
//! **Deterministic ids.** `event_id = <processor>:<transition>:<subject>:<cause id>`: the
//! processor that made the change, what happened (a fixed word such as `promoted`), the entity
//! that changed, and the id of the input that caused it. A replay after a crash, a duplicate
//! from an at-least-once upstream or a requeue reproduces the same id, so the audit chain's
//! deduplication (by `event_id`) keeps each fact once; and an auditor can recompute the id of
//! the event a given input must have caused.
//!
//! **Times.** `occurred_at` is the causing input's event time (`submitted_at`, `decided_at`,
//! `settled_at`, a switch's `issued_at`), never a wall clock, so replays produce identical chain
//! entries. `actor` is the principal behind the cause (the submitter, `sentinelnet`, `finance`,
//! the operator), `subject` the entity (also the record key, which picks the chain partition).

use serde_json::{Map, Value};

use crate::records::AuditEvent;

/// Topic the events go to.
pub const TOPIC: &str = "audit.events";

/// An audit event about to be emitted (see the module doc for the fields).
#[derive(Debug, Clone)]
pub struct Fact {
    processor: &'static str,
    event_type: &'static str,
    transition: &'static str,
    subject: String,
    cause_id: String,
    actor: String,
    occurred_at: i64,
    payload: Map<String, Value>,
}

impl Fact {
    /// `ops.switch_applied`: `processor` applied the operator's switch command in `partition`
    /// (one fact per partition and processor, as each copy of the command is applied where it
    /// lands; `evalstream control` waits for all of them).
    pub fn switch_applied(
        processor: &'static str,
        switch: &crate::records::Switch,
        partition: i32,
    ) -> Self {
        Fact::new(
            processor,
            "ops.switch_applied",
            "switch_applied",
            &switch.command_id,
            format!("p{partition}"),
            switch.issued_at,
        )
        .actor(&switch.actor)
        .with("switch", switch.switch.as_str())
        .with("on", switch.on)
        .with("reason", switch.reason.as_str())
        .with("partition", partition)
    }

    /// A fact of type `event_type` (dotted, e.g. `alloc.settled`) made by `processor`: `subject`
    /// went through `transition` because of the input `cause_id`, at `occurred_at`.
    pub fn new(
        processor: &'static str,
        event_type: &'static str,
        transition: &'static str,
        subject: impl Into<String>,
        cause_id: impl Into<String>,
        occurred_at: i64,
    ) -> Self {
        let mut payload = Map::new();
        payload.insert("processor".into(), Value::from(processor));
        Fact {
            processor,
            event_type,
            transition,
            subject: subject.into(),
            cause_id: cause_id.into(),
            actor: processor.to_string(),
            occurred_at,
            payload,
        }
    }

    /// The principal behind the cause (default: the processor).
    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// Adds a payload member.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.payload.insert(key.to_string(), value.into());
        self
    }

    /// Adds a payload member when `value` is `Some`.
    pub fn with_opt<V: Into<Value>>(self, key: &str, value: Option<V>) -> Self {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    /// The deterministic event id.
    pub fn event_id(&self) -> String {
        event_id(self.processor, self.transition, &self.subject, &self.cause_id)
    }

    /// The subject (the record key on `audit.events`).
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The event.
    pub fn build(self) -> AuditEvent {
        AuditEvent {
            event_id: self.event_id(),
            event_type: self.event_type.to_string(),
            actor: self.actor,
            subject: self.subject,
            occurred_at: self.occurred_at,
            payload: Value::Object(self.payload).to_string(),
        }
    }
}

/// `<processor>:<transition>:<subject>:<cause id>` (the module doc says why).
pub fn event_id(processor: &str, transition: &str, subject: &str, cause_id: &str) -> String {
    format!("{processor}:{transition}:{subject}:{cause_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_derived_from_the_cause_and_payloads_are_json() {
        let e = Fact::new("settlement", "alloc.settled", "settled", "s1:allocation", "le-1", 42)
            .actor("finance")
            .with("amount_minor", 1200)
            .with_opt("ledger_entry_id", Some("le-1"))
            .with_opt::<String>("nothing", None)
            .build();
        assert_eq!(e.event_id, "settlement:settled:s1:allocation:le-1");
        assert_eq!(
            (e.actor.as_str(), e.subject.as_str(), e.occurred_at),
            ("finance", "s1:allocation", 42)
        );
        let payload: Value = serde_json::from_str(&e.payload).unwrap();
        assert_eq!(
            payload,
            serde_json::json!({"processor": "settlement", "amount_minor": 1200, "ledger_entry_id": "le-1"})
        );
        // Canonicalizable, as the chain requires.
        evalstream_audit::canonical::canonicalize_str(&e.payload).unwrap();
    }
}
