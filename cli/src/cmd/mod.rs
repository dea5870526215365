//! One module per subcommand.
pub mod alloc;
pub mod audit;
pub mod bench;
pub mod common;
pub mod consume;
pub mod control;
pub mod dlq;
pub mod domain_io;
pub mod drill;
pub mod finance;
pub mod jsonl;
pub mod policy;
pub mod produce;
pub mod reconcile;
pub mod run;
pub mod signers;
pub mod topology;
