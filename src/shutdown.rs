//! When a long-running command stops: every component, and `hale up` with its children,
//! stop cleanly on the same signals.

/// Resolves on Ctrl-C or SIGTERM.
pub async fn requested() {
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
