//! The processors this binary can run, by name.
