//! Drawing: the frame around every view (title, connection banner, key hints, popups) and
//! one module per view. State in, cells out: nothing here changes the state.

mod overview;
mod views;
pub mod widgets;

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, BorderType, Clear, Paragraph, Wrap};

use crate::app::{App, ChaosKind, Modal, View};
use crate::source::Link;

pub fn draw(f: &mut Frame, app: &App) {
    let banner = banner(app);
    let [header, banner_area, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(u16::from(banner.is_some())),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, app);
    if let Some(b) = banner {
        f.render_widget(Paragraph::new(b), banner_area);
    }
    match &app.view {
        View::Overview => overview::draw(f, body, app),
        View::Service(name) => views::service(f, body, app, name),
        View::Alerts => views::alerts(f, body, app),
        View::Healer => views::healer(f, body, app),
        View::Logs => views::logs(f, body, app),
        View::Nodes => views::nodes(f, body, app),
        View::Info => views::info(f, body, app),
        View::Trace(id) => views::trace(f, body, app, id),
    }
    draw_footer(f, footer, app);
    if let Some(modal) = &app.modal {
        draw_modal(f, modal, app);
    }
}

fn link_dot(name: &str, link: &Link) -> Vec<Span<'static>> {
    let (mark, style) = match link {
        Link::Connected => ("●", Style::new().fg(Color::Green)),
        Link::Connecting => ("○", Style::new().fg(Color::DarkGray)),
        Link::Reconnecting { .. } => ("✕", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
    };
    vec![Span::raw(format!(" {name} ")), Span::styled(mark, style)]
}

fn draw_header(f: &mut Frame, area: Rect, app: &App) {
    let mut left = vec![
        Span::styled(" Hale ", Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD)),
        Span::styled(format!(" {} ", app.view.title()), Style::new().add_modifier(Modifier::BOLD)),
    ];
    if !app.filter.is_empty() {
        left.push(Span::styled(format!(" /{} ", app.filter), Style::new().fg(Color::Yellow)));
    }
    if app.readonly {
        left.push(Span::styled(" read-only ", Style::new().fg(Color::DarkGray)));
    }
    if let Some(h) = &app.snapshot.healer {
        if h.paused {
            left.push(Span::styled(" HEALER PAUSED ", Style::new().fg(Color::Black).bg(Color::Yellow)));
        }
        if h.dry_run {
            left.push(Span::styled(" dry-run ", Style::new().fg(Color::Yellow)));
        }
    }
    let mut right = link_dot("collector", &app.collector);
    right.extend(link_dot("healer", &app.healer));
    right.push(Span::raw(" "));
    let width: usize = right.iter().map(|s| s.content.chars().count()).sum();
    let [l, r] = Layout::horizontal([Constraint::Min(0), Constraint::Length(width as u16)]).areas(area);
    f.render_widget(Paragraph::new(Line::from(left)), l);
    f.render_widget(Paragraph::new(Line::from(right)), r);
}

/// A line about each API that is away, and about a collector that refuses telemetry;
/// `None` while all is well.
fn banner(app: &App) -> Option<Line<'static>> {
    let mut parts = Vec::new();
    if let Some(why) = &app.snapshot.ingest_refused {
        parts.push(format!("collector refuses telemetry: {why}"));
    }
    for (name, link) in [("collector", &app.collector), ("healer", &app.healer)] {
        if let Link::Reconnecting { attempt, next_ms, error } = link {
            let wait = ((next_ms - app.snapshot.at_ms).max(0) + 999) / 1000;
            parts.push(format!("{name} unreachable ({error}), retry {attempt} in {wait} s"));
        }
    }
    if parts.is_empty() {
        return None;
    }
    let text = format!(" {}; figures may be old ", parts.join("; "));
    Some(Line::from(Span::styled(text, Style::new().fg(Color::White).bg(Color::Red).add_modifier(Modifier::BOLD))))
}

fn draw_footer(f: &mut Frame, area: Rect, app: &App) {
    if let Some(status) = &app.status {
        f.render_widget(Paragraph::new(Span::styled(format!(" {status}"), Style::new().fg(Color::Yellow))), area);
        return;
    }
    let mut keys: Vec<(&str, &str)> = vec![(":", "view"), ("/", "filter"), ("↵", "open"), ("esc", "back")];
    if !app.readonly {
        match &app.view {
            View::Healer => keys.extend([("a", "approve"), ("x", "reject"), ("p", "pause"), ("R", "reset")]),
            View::Alerts => keys.extend([("s", "silence"), ("e", "expire silence")]),
            View::Service(_) | View::Nodes if app.chaos => keys.push(("c", "chaos")),
            _ => {}
        }
    }
    if app.view == View::Logs {
        keys.push(("space", "pause"));
    }
    if app.view == View::Healer {
        keys.push(("t", "trace"));
    }
    // `? help` and `q quit` always show, and `i info` (the URLs and logins `hale up`
    // printed before the dashboard took the screen) once there is any; the rest as far
    // as the width allows.
    let tail: &[(&str, &str)] = if app.info.is_some() {
        &[("?", "help"), ("i", "info"), ("q", "quit")]
    } else {
        &[("?", "help"), ("q", "quit")]
    };
    let cost = |(k, what): &(&str, &str)| k.chars().count() + what.chars().count() + 2;
    let mut room = (area.width as usize).saturating_sub(tail.iter().map(cost).sum());
    let fitting: Vec<_> = keys
        .into_iter()
        .take_while(|key| {
            let fits = cost(key) <= room;
            room = room.saturating_sub(cost(key));
            fits
        })
        .collect();
    let mut spans = Vec::new();
    for &(k, what) in fitting.iter().chain(tail) {
        spans.push(Span::styled(format!(" {k}"), Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD)));
        spans.push(Span::styled(format!(" {what}"), Style::new().fg(Color::Gray)));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let [v] = Layout::vertical([Constraint::Length(height.min(area.height))]).flex(Flex::Center).areas(area);
    let [h] = Layout::horizontal([Constraint::Length(width.min(area.width))]).flex(Flex::Center).areas(v);
    h
}

fn popup(f: &mut Frame, title: &str, lines: Vec<Line<'static>>, width: u16) {
    // As tall as the lines once wrapped to the popup's inner width.
    let inner = (width.min(f.area().width).saturating_sub(2)).max(1) as usize;
    let height = lines.iter().map(|l| l.width().max(1).div_ceil(inner) as u16).sum::<u16>() + 2;
    let area = centered(f.area(), width, height);
    f.render_widget(Clear, area);
    let block = Block::bordered().border_type(BorderType::Rounded).title(format!(" {title} "));
    f.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: false }), area);
}

pub const HELP: &[(&str, &str)] = &[
    (":name", "go to a view: overview, service NAME, alerts, healer, logs, nodes, info, trace ID"),
    ("/text", "filter the list (esc or ctrl-u clears); logs: service:NAME level:error words"),
    ("↑ ↓ j k", "move; g / G first / last"),
    ("enter", "drill down: service → replicas, traces → logs, span waterfall; alert → its service"),
    ("t", "healer: the selected repair's own trace"),
    ("esc", "back"),
    ("r", "refresh now"),
    ("i", "info: URLs, demo logins, where the admin token is, data dir"),
    ("a / x", "healer: approve / reject the selected action"),
    ("p", "healer: pause or resume"),
    ("R", "healer: reset a target that needs a human"),
    ("s", "alerts: silence the selected alert"),
    ("e", "alerts: expire the selected silence"),
    ("c", "service, nodes: chaos menu (demo cluster)"),
    ("space", "logs: pause; PgUp / PgDn scroll back"),
    ("q", "quit"),
];

fn draw_modal(f: &mut Frame, modal: &Modal, app: &App) {
    let key = |k: &str| Span::styled(format!("{k:<9}"), Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD));
    match modal {
        Modal::Help => {
            let mut lines: Vec<Line> = HELP
                .iter()
                .filter(|(k, _)| !app.readonly || ![&"a / x", &"p", &"R", &"s", &"e", &"c"].contains(&k))
                .map(|(k, what)| Line::from(vec![key(k), Span::raw(*what)]))
                .collect();
            lines.push(Line::from(Span::styled("any key closes this", Style::new().fg(Color::DarkGray))));
            popup(f, "keys", lines, 76);
        }
        Modal::Command(typed) => {
            let hint =
                View::NAMES.iter().filter(|n| n.starts_with(typed.trim())).copied().collect::<Vec<_>>().join(" ");
            popup(
                f,
                "view",
                vec![
                    Line::from(format!(":{typed}▏")),
                    Line::from(Span::styled(hint, Style::new().fg(Color::DarkGray))),
                ],
                50,
            );
        }
        Modal::Filter(typed) => popup(f, "filter", vec![Line::from(format!("/{typed}▏"))], 50),
        Modal::Confirm(effect) => popup(
            f,
            "confirm",
            vec![
                Line::from(effect.question()),
                Line::from(vec![key("y"), Span::raw("yes   "), key("n"), Span::raw("no")]),
            ],
            60,
        ),
        Modal::SilenceFor { matchers, typed } => {
            let m: Vec<String> = matchers.iter().map(|(k, v)| format!("{k}={v}")).collect();
            popup(
                f,
                "silence",
                vec![
                    Line::from(format!("{{{}}}", m.join(", "))),
                    if typed.is_empty() {
                        Line::from(vec![
                            Span::raw("for: ▏"),
                            Span::styled(
                                format!("{} (enter), or type 30m, 2h, 1d", crate::app::SILENCE_SUGGESTION),
                                Style::new().fg(Color::DarkGray),
                            ),
                        ])
                    } else {
                        Line::from(format!("for: {typed}▏  (enter)"))
                    },
                ],
                60,
            );
        }
        Modal::Chaos { target, node, selected } => {
            let kinds: &[ChaosKind] = if *node { &ChaosKind::NODE } else { &ChaosKind::REPLICA };
            let mut lines: Vec<Line> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let style =
                        if i == *selected { Style::new().add_modifier(Modifier::REVERSED) } else { Style::new() };
                    Line::from(Span::styled(format!(" {} ", k.label()), style))
                })
                .collect();
            lines.push(Line::from(Span::styled("enter picks, esc closes", Style::new().fg(Color::DarkGray))));
            popup(f, &format!("chaos: {target}"), lines, 40);
        }
    }
}
