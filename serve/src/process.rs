//! How a Hale process logs, stops and keeps its memory, the same for `hale` and the slim
//! `hale-agent`: human-readable log lines on stderr at a default level that `HALE_LOG`
//! overrides, a clean stop on Ctrl-C or SIGTERM, and freed heap handed back.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// `HALE_LOG` (an `EnvFilter` directive such as `info` or `hale_agent=debug`), else
/// `default`.
pub fn log_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("HALE_LOG").unwrap_or_else(|_| EnvFilter::new(default))
}

/// Human-readable logs on stderr at `default` level (unless `HALE_LOG` says otherwise).
/// A second call is ignored.
pub fn log_to_stderr(default: &str) {
    let _ = tracing_subscriber::registry()
        .with(log_filter(default))
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn stop_requested() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Tells glibc's allocator to keep freed memory until [`release_free_memory`] hands it
/// back, instead of returning the top of the heap to the kernel at every large free and
/// serving large blocks (over 128 KiB, then whatever size was last freed) with their own
/// `mmap`. Both made each batch of a busy log path fault its buffers in afresh: 140,000
/// page faults per million log lines in the agent, a fifth of its time in a VM. Blocks up
/// to 64 MiB now come from the heap and are reused; the periodic trim still returns what
/// is free. Call it at the start of the process, before other threads start.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn keep_freed_memory_until_trimmed() {
    // SAFETY: mallopt takes no pointers and only sets the allocator's own parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_freed_memory_until_trimmed() {}

/// Hands freed heap pages back to the kernel. glibc keeps freed memory in its arenas
/// until asked, so without this a process's resident size carries the high-water mark of
/// its buffers (the collector's request decoding, an agent's batch encoding).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointers and touches only the allocator's own state,
    // under the allocator's locks; it is documented as safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() {}
