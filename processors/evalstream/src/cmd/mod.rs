//! One module per subcommand.
pub mod bench;
pub mod consume;
pub mod dlq;
pub mod produce;
pub mod run;
pub mod topology;
