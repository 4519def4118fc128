//! Frame render times for `hale bench tui`: every view of the demo fixture drawn into an
//! in-memory terminal of a given size, many times.

use std::time::{Duration, Instant};

use ratatui::Terminal;
use ratatui::backend::TestBackend;

use crate::app::{App, View};
use crate::source::Link;

/// Per view, the time of each of `frames` draws (the first, warm-up draw not counted).
pub fn frame_times(width: u16, height: u16, frames: usize) -> Vec<(String, Vec<Duration>)> {
    let views = [View::Overview, View::Service("search".into()), View::Alerts, View::Healer, View::Logs, View::Nodes];
    views
        .into_iter()
        .map(|view| {
            let mut app = App::new(false, true, true);
            app.snapshot = crate::fixture::demo();
            app.collector = Link::Connected;
            app.healer = Link::Connected;
            app.view = view;
            let mut terminal = match Terminal::new(TestBackend::new(width, height)) {
                Ok(t) => t,
                Err(e) => match e {},
            };
            let _ = terminal.draw(|f| crate::ui::draw(f, &app));
            let times = (0..frames)
                .map(|_| {
                    let start = Instant::now();
                    let _ = terminal.draw(|f| crate::ui::draw(f, &app));
                    start.elapsed()
                })
                .collect();
            (app.view.title(), times)
        })
        .collect()
}
