//! Giving the memory of forgotten pods back to the system. musl's allocator returns freed pages
//! by itself; glibc's keeps them in its arenas (one per thread that allocated), so a standalone
//! service that forgot a fleet would stay at its peak without asking glibc to let them go.

/// Returns the free pages of every glibc arena to the system (`malloc_trim(0)`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the one libc call below, with its SAFETY note
pub(super) fn give_back_free_memory() {
    // SAFETY: malloc_trim only releases memory the allocator holds free; it takes no pointer
    // and is thread-safe (it locks each arena in turn).
    let _released = unsafe { libc::malloc_trim(0) };
}

/// Other allocators (musl's, macOS's) return freed memory themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(super) fn give_back_free_memory() {}
