//! The process allocator: jemalloc, for Rust and for librdkafka's C code alike.
//!
//! **Why.** A processor's records cross threads: the engine thread allocates each output and
//! changelog entry, librdkafka copies it and frees the copy on its broker thread once the broker
//! acknowledged it, the consumer's fetch buffers are allocated on the broker thread and freed on
//! the engine thread. glibc's `malloc` serves such cross-thread frees through per-arena locks: a
//! native profile of `evalstream run totals` at full speed (`perf record`, docs/performance.md,
//! phase 5) put about 43 % of the engine thread's samples in `malloc`/`free`, `malloc_consolidate`
//! and the kernel waking threads blocked on those locks. jemalloc's thread caches and its
//! per-arena free paths remove most of it: CPU per record of the totals benchmark fell from
//! 6.4 to about 3.7 µs.
//!
//! **For C too.** `tikv-jemallocator`'s `unprefixed_malloc_on_supported_platforms` exports
//! `malloc`/`free` themselves, so librdkafka (statically linked by `rdkafka-sys`) allocates from
//! jemalloc as well; the Rust global allocator alone would leave its per-message allocations on
//! glibc.
//!
//! **Tuning.** [`MALLOC_CONF`] is jemalloc's compiled-in configuration. Two arenas and thread
//! caches for objects up to 4 KiB (records are about 1 KiB; larger buffers come from the arenas)
//! keep the peak RSS of the totals benchmark where glibc had it, at jemalloc's speed. Operators
//! can override it at start with the `MALLOC_CONF` environment variable (jemalloc reads it after
//! this default), e.g. `MALLOC_CONF=stats_print:true` prints allocator statistics at exit.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A C string pointer jemalloc reads at start-up.
#[repr(transparent)]
pub struct ConfString(*const std::ffi::c_char);

// SAFETY: the pointer is to a 'static, immutable, NUL-terminated byte string.
unsafe impl Sync for ConfString {}

/// jemalloc's compiled-in options (see the module doc), read once when the process starts. The
/// symbol name is jemalloc's: with unprefixed symbols it looks up `malloc_conf`.
#[export_name = "malloc_conf"]
pub static MALLOC_CONF: ConfString = ConfString(c"narenas:2,tcache_max:4096".as_ptr());
