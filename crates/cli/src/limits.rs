//! The open-file limit. A proxy holds one descriptor per client and one per origin, a
//! balancer two per flow: the usual soft limit of 1,024 would cap them at a few hundred
//! connections, so both raise it at start-up (up to the hard limit), as Squid does for its
//! `max_filedescriptors`.

/// Raises the soft RLIMIT_NOFILE towards `wanted` (never beyond the hard limit) and returns
/// what it is now. Failure only costs capacity, so it is logged, not fatal.
pub fn raise_open_files(wanted: u64) -> u64 {
    match rlimit::increase_nofile_limit(wanted) {
        Ok(now) => now,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            0
        }
    }
}
