//! Giving memory back to the operating system after letting go of a whole
//! state.
//!
//! A replica holds a second, encoded copy of its state only for a while: the
//! initial state until its first stable checkpoint is on disk, a state read
//! back from disk or fetched from peers until it is stored, a checkpoint it
//! served to a peer. Those are millions of small allocations, and glibc's
//! allocator keeps freed small chunks in its heap rather than unmapping
//! them: without being asked, the process would stay as large as its
//! largest moment. `malloc_trim` returns the free pages.

/// Returns the allocator's free pages to the operating system (glibc on
/// Linux; elsewhere a no-op, the allocator decides). Costs a walk over the
/// heap's free chunks: call it after letting go of something large, not
/// per request.
pub(crate) fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator Rust
    // uses here (the system one); it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
