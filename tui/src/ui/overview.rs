//! The overview: nodes, services, SLOs, firing alerts and the healer's latest actions on
//! one screen, readable at 80×24.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::widgets::{self, MISSING};
use crate::app::App;
use crate::source::Link;
use hale_core::cluster::AgentState;

fn block(title: &str) -> Block<'static> {
    Block::bordered().title(Span::styled(format!(" {title} "), Style::new().add_modifier(Modifier::BOLD)))
}

/// A part never read: say why, never draw it as empty (which would look healthy).
fn missing(f: &mut Frame, area: Rect, title: &str, link: &Link) {
    let why = match link {
        Link::Connecting => "waiting for the first answer…",
        Link::Reconnecting { .. } => "no data: unreachable",
        Link::Connected => "no data",
    };
    let text = Span::styled(why, Style::new().fg(Color::DarkGray));
    f.render_widget(Paragraph::new(text).block(block(title)), area);
}

pub fn draw(f: &mut Frame, area: Rect, app: &App) {
    let s = &app.snapshot;
    let nodes_h = s.nodes.as_ref().map_or(1, |n| n.len().max(1)) as u16 + 3;
    let services_h = s.services.as_ref().map_or(1, |v| v.len().max(1)) as u16 + 3;
    let slos_h = s.slos.as_ref().map_or(1, |v| v.len().max(1)) as u16 + 3;
    let [top, middle, bottom] =
        Layout::vertical([Constraint::Length(nodes_h.max(services_h)), Constraint::Length(slos_h), Constraint::Min(3)])
            .areas(area);
    let [nodes, services] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(top);
    draw_nodes(f, nodes, app);
    draw_services(f, services, app);
    draw_slos(f, middle, app);
    let [alerts, actions] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    draw_alerts(f, alerts, app);
    draw_actions(f, actions, app);
}

fn draw_nodes(f: &mut Frame, area: Rect, app: &App) {
    let Some(nodes) = &app.snapshot.nodes else { return missing(f, area, "nodes", &app.collector) };
    // Narrow (an 80-column screen): the agent as a mark, shorter bars, a shorter
    // sparkline; the CPU history is always there.
    let wide = area.width >= 70;
    let (name_w, agent_w, spark_w) = if wide { (7, 5, 12) } else { (6, 1, 5) };
    let fixed = name_w + agent_w + spark_w + 5;
    let bar_w = if wide { 13 } else { (area.width.saturating_sub(2 + fixed) / 3).max(6) as usize };
    let rows: Vec<Row> = nodes
        .iter()
        .map(|n| {
            let agent = match (n.agent, wide) {
                (AgentState::Up, true) => Span::styled("up", Style::new().fg(Color::Green)),
                (AgentState::Up, false) => Span::styled("●", Style::new().fg(Color::Green)),
                (AgentState::Stale, true) => {
                    Span::styled("stale", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD))
                }
                (AgentState::Stale, false) => {
                    Span::styled("?", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD))
                }
                (AgentState::Down, true) => {
                    Span::styled("DOWN", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
                }
                (AgentState::Down, false) => {
                    Span::styled("✕", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
                }
            };
            let history = app
                .snapshot
                .cpu_history
                .get(&n.node)
                .map_or(MISSING.to_string(), |h| widgets::sparkline(h, spark_w as usize));
            Row::new(vec![
                Cell::from(n.node.clone()),
                Cell::from(agent),
                Cell::from(Line::from(widgets::bar(n.cpu_used_ratio, bar_w))),
                Cell::from(Line::from(widgets::bar(n.memory_used_ratio, bar_w))),
                Cell::from(Line::from(widgets::bar(n.disk_used_ratio, bar_w))),
                Cell::from(Span::styled(history, Style::new().fg(Color::Cyan))),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(name_w),
        Constraint::Length(agent_w),
        Constraint::Length(bar_w as u16),
        Constraint::Length(bar_w as u16),
        Constraint::Length(bar_w as u16),
        Constraint::Length(spark_w),
    ];
    let header =
        if wide { ["node", "agent", "cpu", "mem", "disk", "cpu 5m"] } else { ["node", "", "cpu", "mem", "disk", "5m"] };
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().fg(Color::DarkGray)))
        .column_spacing(1)
        .block(block("nodes"));
    f.render_widget(table, area);
}

fn draw_services(f: &mut Frame, area: Rect, app: &App) {
    let Some(services) = &app.snapshot.services else { return missing(f, area, "services", &app.collector) };
    let visible: Vec<_> = app.rows();
    let rows: Vec<Row> = services
        .iter()
        .filter(|svc| visible.iter().any(|r| *r == crate::app::Row::Service(svc.name.clone())))
        .enumerate()
        .map(|(i, svc)| {
            let marks: Vec<Span> = svc.replicas.iter().map(|r| widgets::replica_mark(r.state)).collect();
            let ready = svc.ready();
            let count_style = if ready == 0 {
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)
            } else if ready < svc.replicas.len() {
                Style::new().fg(Color::Yellow)
            } else {
                Style::new()
            };
            let restarts = svc.restarts_1h;
            let row = Row::new(vec![
                Cell::from(svc.name.clone()),
                Cell::from(Line::from(marks)),
                Cell::from(Span::styled(format!("{ready}/{}", svc.replicas.len()), count_style)),
                Cell::from(restarts.map_or(MISSING.to_string(), |n| format!("{n:.0}"))),
            ]);
            if i == app.selected { row.style(Style::new().add_modifier(Modifier::REVERSED)) } else { row }
        })
        .collect();
    let table =
        Table::new(rows, [Constraint::Length(8), Constraint::Length(8), Constraint::Length(5), Constraint::Length(10)])
            .header(Row::new(["service", "replicas", "ready", "restarts/h"]).style(Style::new().fg(Color::DarkGray)))
            .column_spacing(1)
            .block(block("services"));
    f.render_widget(table, area);
}

fn draw_slos(f: &mut Frame, area: Rect, app: &App) {
    let Some(slos) = &app.snapshot.slos else { return missing(f, area, "SLOs", &app.collector) };
    let wide = area.width >= 100;
    let budget_w = if wide { 22 } else { 12 };
    let rows: Vec<Row> = slos
        .iter()
        .map(|o| {
            Row::new(vec![
                Cell::from(format!("{}/{}", o.service, o.name)),
                Cell::from(format!("{}%", o.objective)),
                Cell::from(o.sli.map_or(MISSING.to_string(), |v| format!("{:.3}%", v * 100.0))),
                Cell::from(Line::from(widgets::budget(o.budget_left, budget_w))),
                Cell::from(widgets::burn(o.burn_1h)),
                Cell::from(widgets::burn(o.burn_6h)),
                Cell::from(widgets::slo_status(o.status)),
            ])
        })
        .collect();
    let widths = [Constraint::Fill(1)].into_iter().chain([6, 8, budget_w as u16, 6, 6, 14].map(Constraint::Length));
    let table = Table::new(rows, widths)
        .header(
            Row::new(["SLO", "goal", "SLI", "error budget", "1h", "6h", "state"])
                .style(Style::new().fg(Color::DarkGray)),
        )
        .column_spacing(1)
        .block(block("SLOs"));
    f.render_widget(table, area);
}

fn draw_alerts(f: &mut Frame, area: Rect, app: &App) {
    let Some(alerts) = &app.snapshot.alerts else { return missing(f, area, "firing alerts", &app.collector) };
    let firing: Vec<_> = alerts.iter().filter(|a| a.firing).collect();
    let title = format!("firing alerts ({})", firing.len());
    if firing.is_empty() {
        let text = Span::styled("none", Style::new().fg(Color::Green));
        return f.render_widget(Paragraph::new(text).block(block(&title)), area);
    }
    let now = app.snapshot.at_ms;
    let lines: Vec<Line> = firing
        .iter()
        .map(|a| {
            let severity = a.labels.get("severity").map_or("", String::as_str);
            let style = if severity == "page" { Style::new().fg(Color::Red) } else { Style::new().fg(Color::Yellow) };
            let on = ["instance", "node", "service", "sloth_service"].iter().find_map(|k| a.labels.get(*k)).cloned();
            let since = widgets::rfc3339_ms(&a.active_at).map_or(MISSING.to_string(), |t| widgets::age(now, t));
            // A silenced alert still fires, but nobody is told: dimmed and said so.
            let silenced = app.snapshot.silenced(a);
            let style = if silenced { Style::new().fg(Color::DarkGray) } else { style.add_modifier(Modifier::BOLD) };
            let mut spans = vec![
                Span::styled(format!("{:<4}", since), Style::new().fg(Color::DarkGray)),
                Span::styled(a.name.clone(), style),
                Span::raw(on.map(|o| format!(" {o}")).unwrap_or_default()),
            ];
            if silenced {
                spans.push(Span::styled(" (silenced)", Style::new().fg(Color::DarkGray)));
            }
            Line::from(spans)
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(block(&title)), area);
}

fn draw_actions(f: &mut Frame, area: Rect, app: &App) {
    let Some(healer) = &app.snapshot.healer else { return missing(f, area, "healer", &app.healer) };
    if healer.actions.is_empty() {
        let text = Span::styled("no actions yet", Style::new().fg(Color::DarkGray));
        return f.render_widget(Paragraph::new(text).block(block("healer")), area);
    }
    let now = app.snapshot.at_ms;
    let lines: Vec<Line> = healer
        .actions
        .iter()
        .take(area.height.saturating_sub(2) as usize)
        .map(|a| {
            Line::from(vec![
                Span::styled(format!("{:<4}", widgets::age(now, a.created_ms)), Style::new().fg(Color::DarkGray)),
                Span::styled(format!("{} ", a.kind), Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(format!("{} ", a.target.split_once('/').map_or(a.target.as_str(), |t| t.1))),
                widgets::action_status(&a.status),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(block("healer")), area);
}
