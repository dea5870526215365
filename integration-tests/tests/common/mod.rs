//! Modules shared by several broker tests.
pub mod eos;
