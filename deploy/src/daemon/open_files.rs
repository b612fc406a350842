//! Descriptors: the daemon takes every one the system lets it have (the soft limit raised to
//! the hard one: systemd's soft default of 1024 would cap a busy gateway), and keeps
//! `max_connections` low enough that each connection's two descriptors (client and container)
//! fit with a reserve for everything else (containers' logs, the egress guard, etcd, probes).

/// Descriptors kept for everything but scoring connections.
pub const RESERVE: u64 = 1024;

/// The open-files limit after raising it, or why it could not be read.
pub fn raise() -> Result<u64, String> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// The `max_connections` that fits under `limit` descriptors: `asked`, or less.
pub fn fit(asked: usize, limit: u64) -> usize {
    let room = limit.saturating_sub(RESERVE) / 2;
    asked.min(usize::try_from(room).unwrap_or(usize::MAX)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_keep_two_descriptors_each_and_the_reserve_free() {
        assert_eq!(fit(10_000, 1_048_576), 10_000, "room to spare");
        assert_eq!(fit(10_000, 20_000), 9_488, "two each, after the reserve");
        assert_eq!(fit(10_000, 1_024), 1, "even a tiny limit leaves one");
        assert_eq!(fit(10_000, u64::MAX), 10_000);
    }
}
