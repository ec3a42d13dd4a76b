//! CPU time and peak memory from `getrusage`, for the journal.

/// CPU time (user + system) and peak resident memory of one attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ResourceUsage {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
}

impl ResourceUsage {
    /// From a `rusage` filled by `getrusage` or `wait4`.
    pub fn from_rusage(ru: &libc::rusage) -> Self {
        let secs = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
        Self {
            cpu_seconds: secs(ru.ru_utime) + secs(ru.ru_stime),
            // Linux reports kilobytes.
            peak_rss_bytes: (ru.ru_maxrss.max(0) as u64).saturating_mul(1024),
        }
    }
}

fn rusage(who: libc::c_int) -> Option<libc::rusage> {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer on success.
    let rc = unsafe { libc::getrusage(who, ru.as_mut_ptr()) };
    // SAFETY: zero-initialised, and fully written when rc == 0.
    (rc == 0).then(|| unsafe { ru.assume_init() })
}

/// CPU seconds used so far by the calling thread (Linux `RUSAGE_THREAD`;
/// the whole process elsewhere). A Rust task's CPU is the difference around
/// its run on one thread.
pub fn thread_cpu_seconds() -> f64 {
    #[cfg(target_os = "linux")]
    let who = libc::RUSAGE_THREAD;
    #[cfg(not(target_os = "linux"))]
    let who = libc::RUSAGE_SELF;
    rusage(who)
        .map(|ru| ResourceUsage::from_rusage(&ru).cpu_seconds)
        .unwrap_or(0.0)
}

/// Peak resident memory of this process so far. The kernel keeps no
/// per-thread peak, so an in-process task is charged the process's peak.
pub fn peak_rss_bytes() -> u64 {
    rusage(libc::RUSAGE_SELF)
        .map(|ru| ResourceUsage::from_rusage(&ru).peak_rss_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_grows_with_work_and_rss_is_known() {
        let before = thread_cpu_seconds();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed().as_millis() < 30 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_seconds() > before);
        assert!(peak_rss_bytes() > 0);
    }
}
