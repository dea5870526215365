//! One module per subcommand.
pub mod audit;
pub mod bench;
pub mod common;
pub mod consume;
pub mod dlq;
pub mod jsonl;
pub mod produce;
pub mod run;
pub mod signers;
pub mod topology;
