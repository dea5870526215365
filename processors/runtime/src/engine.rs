//! The exactly-once engine (being implemented).
#![allow(missing_docs)]
