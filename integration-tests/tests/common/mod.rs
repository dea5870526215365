//! Modules shared by several broker tests.
pub mod audit;
pub mod broker;
pub mod eos;
