//! Modules shared by several broker tests.
pub mod audit;
pub mod broker;
pub mod domain;
pub mod eos;
pub mod kms;
pub mod prometheus;
