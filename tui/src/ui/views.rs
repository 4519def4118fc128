//! The drill-down views: a service, alerts, the healer, logs, nodes.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, Wrap};

use super::widgets::{self, MISSING};
use crate::app::{App, Row as AppRow};
use crate::model::{Refused, Retry};
use hale_core::cluster::AgentState;

fn block(title: &str) -> Block<'static> {
    Block::bordered().title(Span::styled(format!(" {title} "), Style::new().add_modifier(Modifier::BOLD)))
}

fn missing(f: &mut Frame, area: Rect, title: &str) {
    let text = Span::styled("no data (the header shows which API is away)", Style::new().fg(Color::DarkGray));
    f.render_widget(Paragraph::new(text).block(block(title)), area);
}

fn selected(style_row: Row<'static>, is: bool) -> Row<'static> {
    if is { style_row.style(Style::new().add_modifier(Modifier::REVERSED)) } else { style_row }
}

fn header(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.to_vec()).style(Style::new().fg(Color::DarkGray))
}

fn level_style(level: &str) -> Style {
    match level {
        "error" => Style::new().fg(Color::Red),
        "warn" => Style::new().fg(Color::Yellow),
        "debug" | "trace" => Style::new().fg(Color::DarkGray),
        _ => Style::new(),
    }
}

/// One log line: time, instance, level, message, then its fields dimmed.
fn log_line(l: &crate::model::LogLine) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{} ", clock(l.time_ms)), Style::new().fg(Color::DarkGray)),
        Span::styled(format!("{:<10} ", l.instance), Style::new().fg(Color::Cyan)),
        Span::styled(format!("{:<5} ", l.level), level_style(&l.level)),
        Span::raw(l.message.clone()),
        Span::styled(format!(" {}", l.detail), Style::new().fg(Color::DarkGray)),
    ])
}

fn clock(ms: i64) -> String {
    let s = (ms / 1000).rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

pub fn service(f: &mut Frame, area: Rect, app: &App, name: &str) {
    let Some(services) = &app.snapshot.services else { return missing(f, area, &format!("service {name}")) };
    let Some(svc) = services.iter().find(|s| s.name == name) else {
        let text = format!("no service {name:?} in the cluster");
        return f.render_widget(Paragraph::new(text).block(block(name)), area);
    };
    let chart_h = if area.height >= 40 { 14 } else { 8 };
    let traces_h = app.snapshot.traces.as_ref().map_or(3, |t| t.rows().len().max(1) as u16 + 3);
    let [replicas, charts, traces, logs] = Layout::vertical([
        Constraint::Length(svc.replicas.len() as u16 + 3),
        Constraint::Length(chart_h),
        Constraint::Length(traces_h),
        Constraint::Min(3),
    ])
    .areas(area);
    traffic(f, charts, app, name);
    let shown = svc.replicas.iter().filter(|r| app.rows().contains(&AppRow::Replica(r.instance.clone()))).count();
    service_traces(f, traces, app, name, app.selected.checked_sub(shown));
    let visible = app.rows();
    let rows: Vec<Row> = svc
        .replicas
        .iter()
        .filter(|r| visible.contains(&AppRow::Replica(r.instance.clone())))
        .enumerate()
        .map(|(i, r)| {
            let process = app.snapshot.process(&r.instance);
            let row = Row::new(vec![
                Cell::from(r.instance.clone()),
                Cell::from(r.node.clone().unwrap_or_else(|| MISSING.into())),
                Cell::from(process.and_then(|p| p.pid).map_or(MISSING.to_string(), |p| p.to_string())),
                Cell::from(process.and_then(|p| p.uptime_secs).map_or(MISSING.to_string(), widgets::uptime)),
                Cell::from(Line::from(vec![
                    widgets::replica_mark(r.state),
                    Span::raw(" "),
                    widgets::replica_word(r.state),
                ])),
                Cell::from(r.restarts.map_or(MISSING.to_string(), |n| format!("{n:.0}"))),
                Cell::from(r.last_error.clone().unwrap_or_default()),
            ]);
            selected(row, i == app.selected)
        })
        .collect();
    let widths = [11, 7, 7, 7, 13, 8].map(Constraint::Length).into_iter().chain([Constraint::Min(10)]);
    let table = Table::new(rows, widths)
        .header(header(&["replica", "node", "pid", "uptime", "probe", "restarts", "last error"]))
        .column_spacing(1)
        .block(block(&format!("{name}: replicas")));
    f.render_widget(table, replicas);
    log_lines(f, logs, app, |l| l.service == name, &format!("{name}: recent logs"));
}

/// The service's failed and slowest traces of the last minutes; `selected` counts among
/// them (Enter opens one).
fn service_traces(f: &mut Frame, area: Rect, app: &App, name: &str, selected_at: Option<usize>) {
    let title = format!("{name}: failed and slowest traces, last 10 min (↵ opens)");
    let Some(traces) = &app.snapshot.traces else {
        let text = Span::styled("no traces (the collector keeps none, or is away)", Style::new().fg(Color::DarkGray));
        return f.render_widget(Paragraph::new(text).block(block(&title)), area);
    };
    let rows: Vec<Row> = traces
        .rows()
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let status = if t.failed { Span::styled("failed", Style::new().fg(Color::Red)) } else { Span::raw("slow") };
            let row = Row::new(vec![
                Cell::from(clock(t.start_ms)),
                Cell::from(format!("{} ms", t.duration_ms)),
                Cell::from(status),
                Cell::from(t.root.clone()),
                Cell::from(Span::styled(t.id.clone(), Style::new().fg(Color::DarkGray))),
            ]);
            selected(row, selected_at == Some(i))
        })
        .collect();
    if rows.is_empty() {
        let text = Span::styled("no traces of this service in 10 min", Style::new().fg(Color::DarkGray));
        return f.render_widget(Paragraph::new(text).block(block(&title)), area);
    }
    let widths = [8, 9, 6].map(Constraint::Length).into_iter().chain([Constraint::Fill(2), Constraint::Fill(1)]);
    let table = Table::new(rows, widths)
        .header(header(&["start", "duration", "", "root span", "trace id"]))
        .column_spacing(1)
        .block(block(&title));
    f.render_widget(table, area);
}

/// A trace as a span waterfall (service, operation, a bar where the span sits in the
/// trace's time, duration, status), the selected span's attributes, and the log lines
/// written in the trace.
pub fn trace(f: &mut Frame, area: Rect, app: &App, id: &str) {
    let title = format!("trace {id}");
    let Some(trace) = app.snapshot.trace.as_ref().filter(|t| t.id == id) else {
        let text = Span::styled("reading the trace…", Style::new().fg(Color::DarkGray));
        return f.render_widget(Paragraph::new(text).block(block(&title)), area);
    };
    if trace.spans.is_empty() {
        let text = "the collector has no span of this trace (yet: spans arrive within seconds; or it was not sampled)";
        return f.render_widget(
            Paragraph::new(Span::styled(text, Style::new().fg(Color::DarkGray))).block(block(&title)),
            area,
        );
    }
    let [spans_area, detail, logs] =
        Layout::vertical([Constraint::Min(5), Constraint::Length(8), Constraint::Length(10)]).areas(area);
    let (start, end) = trace.bounds();
    let total = (end - start).max(1) as f64;
    let bar_width: usize = 30;
    let rows: Vec<Row> = trace
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let from = (((s.start_ns - start) as f64 / total) * bar_width as f64) as usize;
            let len =
                ((((s.end_ns.max(s.start_ns) - s.start_ns) as f64 / total) * bar_width as f64).ceil() as usize).max(1);
            let from = from.min(bar_width - 1);
            let len = len.min(bar_width - from);
            let bar = format!("{}{}{}", " ".repeat(from), "█".repeat(len), " ".repeat(bar_width - from - len));
            let colour = if s.error { Color::Red } else { Color::Cyan };
            let ms = (s.end_ns.saturating_sub(s.start_ns)) as f64 / 1e6;
            let row = Row::new(vec![
                Cell::from(s.instance.clone()),
                Cell::from(format!("{}{}", "  ".repeat(s.depth), s.name)),
                Cell::from(Span::styled(bar, Style::new().fg(colour))),
                Cell::from(format!("{ms:.1} ms")),
                Cell::from(if s.error { Span::styled("error", Style::new().fg(Color::Red)) } else { Span::raw("ok") }),
            ]);
            selected(row, i == app.selected)
        })
        .collect();
    let widths = [
        Constraint::Length(14),
        Constraint::Fill(1),
        Constraint::Length(bar_width as u16),
        Constraint::Length(10),
        Constraint::Length(5),
    ];
    let table = Table::new(rows, widths)
        .header(header(&["instance", "operation", "time", "duration", ""]))
        .column_spacing(1)
        .block(block(&format!("{title}: {} spans, {:.1} ms", trace.spans.len(), total / 1e6)));
    f.render_widget(table, spans_area);
    let span = trace.spans.get(app.selected);
    let attributes: Vec<Line> = span
        .map(|s| {
            s.attributes
                .iter()
                .map(|(k, v)| {
                    Line::from(vec![
                        Span::styled(format!("{k} = "), Style::new().fg(Color::DarkGray)),
                        Span::raw(v.clone()),
                    ])
                })
                .collect()
        })
        .unwrap_or_default();
    let about = span.map_or(String::new(), |s| format!("{} {}: attributes", s.service, s.name));
    f.render_widget(Paragraph::new(attributes).wrap(Wrap { trim: false }).block(block(&about)), detail);
    let lines: Vec<Line> = trace.logs.iter().map(log_line).collect();
    let logs_title = format!("log lines of this trace ({})", trace.logs.len());
    f.render_widget(Paragraph::new(lines).block(block(&logs_title)), logs);
}

/// Requests/s, errors/s and p50/p99 latency over the last five minutes, side by side.
fn traffic(f: &mut Frame, area: Rect, app: &App, name: &str) {
    let [rate, errors, latency] = Layout::horizontal([Constraint::Ratio(1, 3); 3]).areas(area);
    let Some(series) = app.snapshot.focus.as_ref().filter(|s| s.service == name) else {
        for (a, title) in [(rate, "requests/s"), (errors, "errors/s"), (latency, "p50 / p99 ms")] {
            let text = Span::styled("waiting for data…", Style::new().fg(Color::DarkGray));
            f.render_widget(Paragraph::new(text).block(block(title)), a);
        }
        return;
    };
    chart(f, rate, "requests/s", &[(&series.rate, Color::Cyan)], 1.0, "");
    chart(f, errors, "errors/s", &[(&series.errors, Color::Red)], 1.0, "");
    chart(f, latency, "p50 / p99", &[(&series.p50, Color::Green), (&series.p99, Color::Yellow)], 1000.0, " ms");
}

/// A line chart of the last five minutes; values shown times `scale` with `unit`. No
/// points at all is said, not drawn as a flat zero line.
fn chart(f: &mut Frame, area: Rect, title: &str, lines: &[(&[(f64, f64)], Color)], scale: f64, unit: &str) {
    use ratatui::symbols::Marker;
    use ratatui::widgets::{Axis, Chart, Dataset, GraphType};
    let points: Vec<Vec<(f64, f64)>> =
        lines.iter().map(|(pts, _)| pts.iter().map(|(t, v)| (*t, v * scale)).collect()).collect();
    let all: Vec<&(f64, f64)> = points.iter().flatten().collect();
    if all.is_empty() {
        let text = Span::styled("no requests in 5 min", Style::new().fg(Color::DarkGray));
        return f.render_widget(Paragraph::new(text).block(block(title)), area);
    }
    let (t0, t1) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), (t, _)| (a.min(*t), b.max(*t)));
    let top = all.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max).max(f64::EPSILON) * 1.1;
    let last: Vec<String> = points
        .iter()
        .filter_map(|pts| pts.last().map(|(_, v)| if *v < 10.0 { format!("{v:.1}") } else { format!("{v:.0}") }))
        .collect();
    let datasets: Vec<Dataset> = lines
        .iter()
        .zip(&points)
        .map(|((_, color), pts)| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(*color))
                .data(pts)
        })
        .collect();
    let chart = Chart::new(datasets)
        .block(block(&format!("{title}: {}{unit}", last.join(" / "))))
        .x_axis(Axis::default().bounds([t0, t1.max(t0 + 1.0)]))
        .y_axis(
            Axis::default()
                .bounds([0.0, top])
                .labels([Span::raw("0"), Span::raw(format!("{top:.0}"))])
                .style(Style::new().fg(Color::DarkGray)),
        );
    f.render_widget(chart, area);
}

fn log_lines(f: &mut Frame, area: Rect, app: &App, keep: impl Fn(&crate::model::LogLine) -> bool, title: &str) {
    let Some(lines) = &app.snapshot.logs else { return missing(f, area, title) };
    let filter = crate::model::LogFilter::parse(&app.filter);
    let matching: Vec<_> = lines.iter().filter(|l| keep(l) && filter.matches(l)).collect();
    let height = area.height.saturating_sub(2) as usize;
    let back = app.logs_scroll.min(matching.len().saturating_sub(height.min(matching.len())));
    let end = matching.len() - back;
    let start = end.saturating_sub(height);
    let out: Vec<Line> = matching[start..end].iter().map(|l| log_line(l)).collect();
    let mut title = title.to_string();
    if app.logs_paused {
        title.push_str(" — PAUSED");
    }
    if back > 0 {
        title.push_str(&format!(" — {back} lines back"));
    }
    f.render_widget(Paragraph::new(out).block(block(&title)), area);
}

pub fn logs(f: &mut Frame, area: Rect, app: &App) {
    log_lines(f, area, app, |_| true, "logs: the whole fleet (/ service:search level:error words)");
}

pub fn alerts(f: &mut Frame, area: Rect, app: &App) {
    let Some(alerts) = &app.snapshot.alerts else { return missing(f, area, "alerts") };
    let now = app.snapshot.at_ms;
    let silences = app.snapshot.silences.as_deref().unwrap_or_default();
    let [list, silenced] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(silences.len().max(1) as u16 + 3)]).areas(area);
    let filter = app.filter.to_lowercase();
    let keep = |a: &crate::model::Alert| {
        filter.is_empty() || format!("{} {:?}", a.name, a.labels).to_lowercase().contains(&filter)
    };
    // One line per notification group, as wide as the panel (a table cell would cut the
    // group's labels at the alert column's width), then its alerts in columns; rows count
    // alerts only.
    let inner = list.width.saturating_sub(2) as usize;
    // The name column as wide as the longest name (within reason), so names are whole too.
    let longest = alerts.iter().map(|a| a.name.chars().count() + 2).max().unwrap_or(0);
    let (name_w, state_w, age_w) = (longest.clamp(24, 34), 8, 5);
    let labels_w = (inner * 2 / 5).max(10);
    let column = |text: &str, width: usize| {
        let cut: String = text.chars().take(width).collect();
        format!("{cut:<width$} ")
    };
    let mut lines: Vec<Line> = vec![Line::from(Span::styled(
        format!(
            "{}{}{}{}summary",
            column("alert", name_w),
            column("state", state_w),
            column("age", age_w),
            column("labels", labels_w)
        ),
        Style::new().fg(Color::DarkGray),
    ))];
    let mut index = 0;
    for (group, members) in app.snapshot.alert_groups(keep) {
        let firing = members.iter().filter(|a| a.firing).count();
        let style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
        lines.push(Line::from(vec![
            Span::styled(format!("{{{group}}}"), style),
            Span::styled(format!("  {firing} firing, {} pending", members.len() - firing), style),
        ]));
        for a in members {
            let (state, state_style) = match (a.firing, app.snapshot.silenced(a)) {
                (true, true) => ("silenced", Style::new().fg(Color::DarkGray)),
                (true, false) => ("firing", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
                (false, _) => ("pending", Style::new().fg(Color::Yellow)),
            };
            let labels: Vec<String> =
                a.labels.iter().filter(|(k, _)| *k != "alertname").map(|(k, v)| format!("{k}={v}")).collect();
            let since = widgets::rfc3339_ms(&a.active_at).map_or(MISSING.to_string(), |t| widgets::age(now, t));
            let line = Line::from(vec![
                Span::raw(column(&format!("  {}", a.name), name_w)),
                Span::styled(column(state, state_w), state_style),
                Span::raw(column(&since, age_w)),
                Span::raw(column(&labels.join(" "), labels_w)),
                Span::raw(a.summary.clone()),
            ]);
            let line =
                if index == app.selected { line.style(Style::new().add_modifier(Modifier::REVERSED)) } else { line };
            lines.push(line);
            index += 1;
        }
    }
    let title = format!(
        "alerts ({} firing, {} pending), grouped by {}",
        alerts.iter().filter(|a| a.firing).count(),
        alerts.iter().filter(|a| !a.firing).count(),
        if app.snapshot.alert_group_by.is_empty() { "nothing".into() } else { app.snapshot.alert_group_by.join(", ") }
    );
    let table = Paragraph::new(lines).block(block(&title));
    f.render_widget(table, list);
    let alert_rows = index;
    let lines: Vec<Row> = silences
        .iter()
        .enumerate()
        .map(|(i, x)| {
            selected(
                Row::new(vec![
                    Cell::from(x.state.clone()),
                    Cell::from(x.ends_at.get(..16).unwrap_or(&x.ends_at).replace('T', " ")),
                    Cell::from(x.matchers.clone()),
                    Cell::from(Span::styled(x.comment.clone(), Style::new().fg(Color::DarkGray))),
                ]),
                alert_rows + i == app.selected,
            )
        })
        .collect();
    let silences_table = Table::new(
        lines,
        [Constraint::Length(7), Constraint::Length(17), Constraint::Percentage(50), Constraint::Fill(1)],
    )
    .header(header(&["state", "ends (UTC)", "matchers", "comment"]))
    .column_spacing(1)
    .block(block(match app.snapshot.silences {
        Some(_) => "silences (e expires the selected one)",
        None => "silences: no data",
    }));
    f.render_widget(silences_table, silenced);
}

pub fn healer(f: &mut Frame, area: Rect, app: &App) {
    let Some(h) = &app.snapshot.healer else { return missing(f, area, "healer") };
    let now = app.snapshot.at_ms;
    let humans = h.needs_human.len() as u16;
    let filter = app.filter.to_lowercase();
    let refused: Vec<&Refused> = h
        .refused
        .iter()
        .filter(|r| {
            filter.is_empty()
                || format!("{} {} {} {}", r.action, r.target, r.alert, r.reason).to_lowercase().contains(&filter)
        })
        .collect();
    // Refusals get a few lines of their own, so the repairs below always keep most of it.
    let refused_rows = if refused.is_empty() { 0 } else { 3 + refused.len().min(4) as u16 };
    let [state, held, timeline] =
        Layout::vertical([Constraint::Length(3 + humans), Constraint::Length(refused_rows), Constraint::Min(3)])
            .areas(area);
    let mut lines = vec![Line::from(vec![
        Span::raw("automatic repairs: "),
        if h.paused {
            Span::styled("PAUSED", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD))
        } else {
            Span::styled("on", Style::new().fg(Color::Green))
        },
        Span::raw(if h.dry_run { "  (dry-run: nothing is done, everything recorded)" } else { "" }),
        Span::raw(format!("   awaiting approval: {}", h.actions.iter().filter(|a| a.awaiting_approval()).count())),
        Span::raw(format!("   refused for now: {}", h.refused.len())),
    ])];
    for (target, why) in &h.needs_human {
        lines.push(Line::from(vec![
            Span::styled("needs a human: ", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
            Span::raw(format!("{target} — {why}")),
        ]));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(block("healer")), state);
    let wide = timeline.width >= 120;
    if !refused.is_empty() {
        refusals(f, held, &refused, now, wide);
    }
    let rows: Vec<Row> = h
        .actions
        .iter()
        .filter(|a| {
            filter.is_empty()
                || format!("{} {} {} {}", a.kind, a.target, a.status, a.alert).to_lowercase().contains(&filter)
        })
        .enumerate()
        .map(|(i, a)| {
            let took = if matches!(a.status.as_str(), "succeeded" | "failed") {
                format!("{:.1}s", (a.updated_ms - a.created_ms).max(0) as f64 / 1000.0)
            } else {
                MISSING.into()
            };
            let row = RepairRow {
                at_ms: a.created_ms,
                action: &a.kind,
                target: &a.target,
                state: widgets::action_status(&a.status),
                more: [took, a.alert.clone()],
                words: &a.detail,
            };
            selected(row.cells(now, wide), i == app.selected)
        })
        .collect();
    let columns = RepairColumns {
        wide: ["age", "action", "target", "outcome", "took", "why (alert)", "detail"],
        state_widths: [17, 17],
        more_width: 6,
    };
    f.render_widget(columns.table(rows, wide, "actions, newest first"), timeline);
}

/// The alerts the healer refused for now: what, why, and when it decides them again.
fn refusals(f: &mut Frame, area: Rect, refused: &[&Refused], now: i64, wide: bool) {
    let rows: Vec<Row> = refused
        .iter()
        .map(|r| {
            let row = RepairRow {
                at_ms: r.first_refused_ms,
                action: &r.action,
                target: &r.target,
                state: Span::styled(retry_text(&r.retry, now), Style::new().fg(Color::Yellow)),
                more: [r.attempts.to_string(), r.alert.clone()],
                words: &r.reason,
            };
            row.cells(now, wide)
        })
        .collect();
    let columns = RepairColumns {
        wide: ["age", "action", "target", "retry", "tries", "alert", "why refused"],
        state_widths: [17, 15],
        more_width: 5,
    };
    let title = "refused for now, decided again when the reason lifts (if still firing)";
    f.render_widget(columns.table(rows, wide, title), area);
}

/// A row of the healer's tables (its actions, its refusals): when, what, on what (the
/// target's name alone when narrow), where it stands; two more cells when wide; then
/// the words, in what width is left.
struct RepairRow<'a> {
    at_ms: i64,
    action: &'a str,
    target: &'a str,
    state: Span<'static>,
    more: [String; 2],
    words: &'a str,
}

impl RepairRow<'_> {
    fn cells(self, now: i64, wide: bool) -> Row<'static> {
        let target = if wide { self.target } else { self.target.split_once('/').map_or(self.target, |t| t.1) };
        let mut cells = vec![
            Cell::from(widgets::age(now, self.at_ms)),
            Cell::from(Span::styled(self.action.to_string(), Style::new().add_modifier(Modifier::BOLD))),
            Cell::from(target.to_string()),
            Cell::from(self.state),
        ];
        if wide {
            cells.extend(self.more.map(Cell::from));
        }
        cells.push(Cell::from(self.words.to_string()));
        Row::new(cells)
    }
}

/// The columns of a healer table: their names when wide (narrow drops the fifth and
/// sixth), the state column's width wide and narrow, and the fifth's.
struct RepairColumns {
    wide: [&'static str; 7],
    state_widths: [u16; 2],
    more_width: u16,
}

impl RepairColumns {
    fn table(&self, rows: Vec<Row<'static>>, wide: bool, title: &str) -> Table<'static> {
        let [state_wide, state_narrow] = self.state_widths;
        let (lengths, names): (Vec<u16>, Vec<&'static str>) = if wide {
            (vec![4, 10, 20, state_wide, self.more_width, 18], self.wide.to_vec())
        } else {
            let [age, action, target, state, _, _, words] = self.wide;
            (vec![4, 9, 10, state_narrow], vec![age, action, target, state, words])
        };
        let widths = lengths.into_iter().map(Constraint::Length).chain([Constraint::Fill(1)]);
        Table::new(rows, widths).header(header(&names)).column_spacing(1).block(block(title))
    }
}

/// When a refused alert is looked at again, in a few words.
fn retry_text(retry: &Retry, now: i64) -> String {
    match retry {
        Retry::At(t) if *t > now => format!("in {}", widgets::age(*t, now)),
        Retry::At(_) => "now".into(),
        Retry::WhenTargetFree => "its action ends".into(),
        Retry::WhenFreed(service) => format!("{service} frees up"),
        Retry::OnResume => "on resume".into(),
        Retry::Unknown(when) if when.is_empty() => MISSING.into(),
        Retry::Unknown(when) => when.clone(),
    }
}

pub fn nodes(f: &mut Frame, area: Rect, app: &App) {
    let Some(nodes) = &app.snapshot.nodes else { return missing(f, area, "nodes") };
    let filter = app.filter.to_lowercase();
    let shown: Vec<_> = nodes.iter().filter(|n| filter.is_empty() || n.node.to_lowercase().contains(&filter)).collect();
    let rows: Vec<Row> = shown
        .iter()
        .enumerate()
        .map(|(i, n)| {
            // What the node's agent says it runs: pid and state, or why not.
            let replicas: Vec<Span> = match app.snapshot.processes.get(&n.node) {
                Some(Some(list)) => list
                    .iter()
                    .flat_map(|p| {
                        let state = match p.state.as_str() {
                            "running" => Span::styled("●", Style::new().fg(Color::Green)),
                            "crash_loop" => Span::styled("✕", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
                            "stopped" | "stopping" => Span::styled("○", Style::new().fg(Color::DarkGray)),
                            _ => Span::styled("↻", Style::new().fg(Color::Cyan)),
                        };
                        let pid = p.pid.map_or(String::new(), |pid| format!(":{pid}"));
                        [state, Span::raw(format!("{}{pid} ", p.name))]
                    })
                    .collect(),
                Some(None) => vec![Span::styled("agent not answering", Style::new().fg(Color::Red))],
                None => vec![Span::styled(MISSING, Style::new().fg(Color::DarkGray))],
            };
            let agent = match n.agent {
                AgentState::Up => Span::styled("up", Style::new().fg(Color::Green)),
                AgentState::Stale => Span::styled("stale", Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD)),
                AgentState::Down => Span::styled("DOWN", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
            };
            let seen = n.last_seen_secs_ago.map_or(MISSING.to_string(), |s| format!("{s:.0}s"));
            selected(
                Row::new(vec![
                    Cell::from(n.node.clone()),
                    Cell::from(agent),
                    Cell::from(seen),
                    Cell::from(Line::from(widgets::bar(n.cpu_used_ratio, 11))),
                    Cell::from(Line::from(widgets::bar(n.memory_used_ratio, 11))),
                    Cell::from(Line::from(widgets::bar(n.disk_used_ratio, 11))),
                    Cell::from(Line::from(replicas)),
                ]),
                i == app.selected,
            )
        })
        .collect();
    let widths = [7, 5, 5, 11, 11, 11].map(Constraint::Length).into_iter().chain([Constraint::Min(10)]);
    let table = Table::new(rows, widths)
        .header(header(&["node", "agent", "seen", "cpu", "mem", "disk", "processes it supervises (name:pid)"]))
        .column_spacing(1)
        .block(block("nodes"));
    f.render_widget(table, area);
}

/// The info view: what `hale up` printed before the dashboard took the screen. The most
/// asked-for first (the shop's URL, the logins, where the admin token is), the replicas
/// last, since a short screen cuts from the bottom.
pub fn info(f: &mut Frame, area: Rect, app: &App) {
    let Some(info) = &app.info else {
        let text = Span::styled(
            "nothing known beyond the APIs: open the dashboard with --data-dir to see the cluster's addresses",
            Style::new().fg(Color::DarkGray),
        );
        return f.render_widget(Paragraph::new(text).wrap(Wrap { trim: false }).block(block("info")), area);
    };
    let key = |k: &str| Span::styled(format!("{k:<12}"), Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD));
    let dim = |t: String| Span::styled(t, Style::new().fg(Color::DarkGray));
    let wide = area.width >= 100;
    let mut lines = Vec::new();
    if let Some(gateway) = &info.gateway {
        lines.push(Line::from(vec![key("shop"), Span::raw(gateway.clone()), dim("  (the gateway)".into())]));
    }
    let collector_note = if wide { "  (Prometheus API /api/v1/query, /api/v1/alerts, /api/v1/slos)" } else { "" };
    lines.push(Line::from(vec![key("collector"), Span::raw(info.collector.clone()), dim(collector_note.into())]));
    let healer_note = if wide { "  (/api/v1/actions, /api/v1/state)" } else { "" };
    lines.push(Line::from(vec![key("healer"), Span::raw(info.healer.clone()), dim(healer_note.into())]));
    if !info.logins.is_empty() {
        let logins: Vec<String> = info.logins.iter().map(|(u, p)| format!("{u} / {p}")).collect();
        lines.push(Line::from(vec![key("logins"), Span::raw(logins.join(", "))]));
    }
    if let Some(dir) = &info.data_dir {
        let config = format!("{}/cluster.toml", dir.trim_end_matches('/'));
        lines.push(Line::from(vec![key("admin token"), Span::raw(format!("secrets.admin_token in {config}"))]));
        lines.push(Line::from(vec![key(""), dim(format!("grep admin_token {config}"))]));
        lines.push(Line::from(vec![
            key("data dir"),
            Span::raw(dir.clone()),
            dim("  (logs/, healer/audit.jsonl)".into()),
        ]));
    }
    if let Some(load) = &info.load {
        lines.push(Line::from(vec![key("load"), Span::raw(load.clone())]));
    }
    // Agents three and replicas two to a line when wide.
    let per_line = if wide { 3 } else { 1 };
    let pairs: Vec<String> = info.agents.iter().map(|(node, url)| format!("{node:<8} {url:<24}")).collect();
    for (i, chunk) in pairs.chunks(per_line).enumerate() {
        let label = if i == 0 { "agents" } else { "" };
        lines.push(Line::from(vec![key(label), Span::raw(chunk.join("  ").trim_end().to_string())]));
    }
    let per_line = if wide { 2 } else { 1 };
    let replicas: Vec<String> =
        info.replicas.iter().map(|(name, url, on)| format!("{name:<10} {url:<22} {on:<16}")).collect();
    for (i, chunk) in replicas.chunks(per_line).enumerate() {
        let label = if i == 0 { "replicas" } else { "" };
        lines.push(Line::from(vec![key(label), Span::raw(chunk.join("  ").trim_end().to_string())]));
    }
    f.render_widget(Paragraph::new(lines).block(block("info: where everything is")), area);
}
