//! The event loop: keys, refreshes and effect outcomes in, frames out. The terminal is
//! restored however the loop ends: quit, error, or panic (ratatui's hook).

use hale_core::time::now_ms;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{Event, EventStream, KeyEventKind};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use crate::app::{App, Effect};
use crate::model::Snapshot;
use crate::source::{Endpoints, Link, Source};

/// Carries out what a confirmed key asks for; the answer goes to the footer.
pub trait Actuator: Send + Sync + 'static {
    fn act(&self, effect: Effect) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

pub struct Options {
    pub endpoints: Endpoints,
    pub readonly: bool,
    /// Offer the chaos menu (a demo cluster whose data dir the actuator knows).
    pub chaos: bool,
    /// Quitting stops the cluster: ask first.
    pub owns_cluster: bool,
    pub refresh: Duration,
    /// What the info view shows (URLs, logins, where the admin token is).
    pub info: Option<crate::info::ClusterInfo>,
}

/// Restores the terminal when dropped, however the loop ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

/// Runs the dashboard until the user quits or `stop` resolves (the cluster went away).
pub async fn run(options: Options, actuator: Arc<dyn Actuator>, stop: impl Future<Output = ()>) -> std::io::Result<()> {
    // The guard first: a failed init that got as far as raw mode is undone too.
    let _restore = Restore;
    let mut terminal = ratatui::try_init()?;
    let mut app = App::new(options.readonly, options.chaos, options.owns_cluster);
    app.info = options.info;

    // Refreshes run apart from the keys, so a slow API never freezes the screen.
    let (snap_tx, mut snap_rx) = watch::channel((Snapshot::default(), Link::Connecting, Link::Connecting));
    let refresh_now = Arc::new(tokio::sync::Notify::new());
    // Which service's traffic and traces, and which trace, the refresher reads too (what
    // the service and trace views show).
    let (focus_tx, focus_rx) = watch::channel((None::<String>, None::<String>));
    let refresher = tokio::spawn({
        let mut source = Source::new(options.endpoints);
        let refresh_now = refresh_now.clone();
        let every = options.refresh;
        async move {
            loop {
                (source.focus, source.trace) = focus_rx.borrow().clone();
                let snapshot = source.refresh(now_ms()).await;
                if snap_tx.send((snapshot, source.collector.clone(), source.healer.clone())).is_err() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = refresh_now.notified() => {}
                }
            }
        }
    });
    let (done_tx, mut done_rx) = mpsc::channel::<String>(16);
    let mut events = EventStream::new();
    tokio::pin!(stop);
    let result = loop {
        terminal.draw(|f| crate::ui::draw(f, &app))?;
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Key(key))) if key.kind == KeyEventKind::Press => {
                    app.status = None;
                    match app.on_key(key) {
                        Some(Effect::Quit) => break Ok(()),
                        Some(Effect::Refresh) => refresh_now.notify_one(),
                        Some(effect) => {
                            app.status = Some(format!("{}…", effect.question().trim_end_matches('?')));
                            let (actuator, done) = (actuator.clone(), done_tx.clone());
                            let refresh_now = refresh_now.clone();
                            tokio::spawn(async move {
                                let outcome = actuator.act(effect).await.unwrap_or_else(|e| format!("failed: {e}"));
                                let _ = done.send(outcome).await;
                                refresh_now.notify_one();
                            });
                        }
                        None => {}
                    }
                    let focus = match &app.view {
                        crate::app::View::Service(name) => (Some(name.clone()), None),
                        crate::app::View::Trace(id) => (None, Some(id.clone())),
                        _ => (None, None),
                    };
                    if *focus_tx.borrow() != focus {
                        focus_tx.send_replace(focus);
                        refresh_now.notify_one();
                    }
                }
                Some(Ok(_)) => {} // resize and the rest: the next draw fits the new size
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            changed = snap_rx.changed() => {
                if changed.is_err() {
                    // The refresher is gone (it panicked): say so rather than show old data.
                    break Err(std::io::Error::other("the dashboard stopped reading the APIs"));
                }
                let (snapshot, collector, healer) = snap_rx.borrow_and_update().clone();
                app.set_snapshot(snapshot);
                app.collector = collector;
                app.healer = healer;
            }
            Some(outcome) = done_rx.recv() => app.status = Some(outcome),
            _ = &mut stop => break Ok(()),
        }
    };
    refresher.abort();
    result
}
