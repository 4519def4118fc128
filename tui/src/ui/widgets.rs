//! Small pieces every view uses: bars, replica marks, numbers that may be missing.

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Span;

use crate::model::{ReplicaState, SloStatus, slo_label};

pub const MISSING: &str = "—";

/// `███░░░  42%` in `width` cells (bar and percent), or a dash without data.
fn meter(value: Option<f64>, width: usize, pct: usize, color: impl Fn(f64) -> Color) -> Vec<Span<'static>> {
    let Some(v) = value else {
        return vec![Span::styled(format!("{MISSING:<width$}"), Style::new().fg(Color::DarkGray))];
    };
    let cells = width.saturating_sub(pct + 1);
    let filled = ((v.clamp(0.0, 1.0) * cells as f64).round() as usize).min(cells);
    vec![
        Span::styled("█".repeat(filled), Style::new().fg(color(v))),
        Span::styled("░".repeat(cells - filled), Style::new().fg(Color::DarkGray)),
        Span::raw(format!("{:>pct$.0}%", (v * 100.0).max(-9999.0))),
    ]
}

/// A resource in use: red from 90 %, yellow from 75 %.
pub fn bar(ratio: Option<f64>, width: usize) -> Vec<Span<'static>> {
    meter(ratio, width, 4, |r| {
        if r >= 0.9 {
            Color::Red
        } else if r >= 0.75 {
            Color::Yellow
        } else {
            Color::Green
        }
    })
}

/// Error budget left: full is good; under a quarter yellow, spent red.
/// Room for `-255%`: an overspent budget goes well below zero.
pub fn budget(left: Option<f64>, width: usize) -> Vec<Span<'static>> {
    meter(left, width, 5, |l| {
        if l <= 0.0 {
            Color::Red
        } else if l < 0.25 {
            Color::Yellow
        } else {
            Color::Green
        }
    })
}

pub fn replica_mark(state: ReplicaState) -> Span<'static> {
    match state {
        ReplicaState::Ready => Span::styled("●", Style::new().fg(Color::Green)),
        ReplicaState::NotReady => Span::styled("◐", Style::new().fg(Color::Yellow)),
        ReplicaState::Down => Span::styled("✕", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
        ReplicaState::Stale => Span::styled("?", Style::new().fg(Color::DarkGray)),
        ReplicaState::Restarting => Span::styled("↻", Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)),
    }
}

pub fn replica_word(state: ReplicaState) -> Span<'static> {
    match state {
        ReplicaState::Ready => Span::styled("ready", Style::new().fg(Color::Green)),
        ReplicaState::NotReady => Span::styled("not ready", Style::new().fg(Color::Yellow)),
        ReplicaState::Down => Span::styled("down", Style::new().fg(Color::Red)),
        ReplicaState::Stale => Span::styled("stale", Style::new().fg(Color::DarkGray)),
        ReplicaState::Restarting => Span::styled("restarting", Style::new().fg(Color::Cyan)),
    }
}

pub fn slo_status(status: SloStatus) -> Span<'static> {
    let style = match status {
        SloStatus::Ok => Style::new().fg(Color::Green),
        SloStatus::Ticket => Style::new().fg(Color::Yellow),
        SloStatus::Page => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        SloStatus::InsufficientData | SloStatus::NoData => Style::new().fg(Color::DarkGray),
    };
    Span::styled(slo_label(status), style)
}

/// A burn rate: `0.4×`, red from 14.4× (the fast page), yellow from 1×.
pub fn burn(rate: Option<f64>) -> Span<'static> {
    match rate {
        None => Span::styled(MISSING, Style::new().fg(Color::DarkGray)),
        Some(r) => {
            let style = if r >= 14.4 {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else if r >= 1.0 {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new()
            };
            Span::styled(format!("{r:.1}×"), style)
        }
    }
}

pub fn action_status(status: &str) -> Span<'static> {
    let style = match status {
        "succeeded" => Style::new().fg(Color::Green),
        "failed" => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        "running" | "verifying" => Style::new().fg(Color::Cyan),
        "awaiting_approval" => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        _ => Style::new().fg(Color::DarkGray),
    };
    Span::styled(status.replace('_', " "), style)
}

/// `12s`, `4m`, `3h`, `2d` ago, from two epoch-ms instants.
pub fn age(now_ms: i64, then_ms: i64) -> String {
    let s = ((now_ms - then_ms).max(0) / 1000) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Epoch ms of an RFC 3339 time (as the collector writes them), if it reads.
pub fn rfc3339_ms(t: &str) -> Option<i64> {
    hale_core::time::parse_rfc3339(t)
}

/// Unicode block sparkline of values in 0..=1, the last `width` of them.
pub fn sparkline(values: &[f64], width: usize) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(width)..];
    tail.iter().map(|v| LEVELS[((v.clamp(0.0, 1.0) * 7.0).round() as usize).min(7)]).collect()
}

/// `8s`, `4m`, `3h12m`, `2d` of uptime.
pub fn uptime(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h{:02}m", secs / 3600, (secs / 60) % 60),
        _ => format!("{}d", secs / 86400),
    }
}
