//! Topology as data (STUB — being implemented).
#![allow(missing_docs)]
