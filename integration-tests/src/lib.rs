//! Helpers shared by the broker tests.
