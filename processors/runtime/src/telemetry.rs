//! Logging set-up (STUB — being implemented).
#![allow(missing_docs)]
pub fn init() {}
