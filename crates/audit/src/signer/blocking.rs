//! Blocking calls that are safe from any thread.
//!
//! Why: a tokio runtime cannot `block_on` inside another runtime's thread, and reqwest's blocking
//! client panics there. Our callers run on plain OS threads, but a signer must not turn a
//! mistaken call from async code (a test, a `/ready` probe) into a panic: in that case the work
//! moves to a short-lived scoped helper thread, and the caller waits for it.

/// Runs `f` on the current thread, or on a scoped helper thread when the current thread is
/// inside a tokio runtime. `None` if `f` panicked, so callers report an error instead of
/// propagating the panic.
pub(crate) fn off_async_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> Option<T> {
    if tokio::runtime::Handle::try_current().is_err() {
        return std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok();
    }
    std::thread::scope(|s| s.spawn(f).join().ok())
}

/// True when the current thread is inside a tokio runtime, where blocking resources (a runtime,
/// a blocking HTTP client) must not be dropped.
pub(crate) fn in_async_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_inline_outside_a_runtime_and_on_a_helper_inside_one() {
        let here = std::thread::current().id();
        assert_eq!(off_async_runtime(|| std::thread::current().id()), Some(here));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let inside = rt.block_on(async { off_async_runtime(|| std::thread::current().id()) });
        assert!(matches!(inside, Some(id) if id != here));
    }

    #[test]
    fn a_panic_becomes_none() {
        assert_eq!(off_async_runtime(|| -> u8 { panic!("boom") }), None);
    }
}
