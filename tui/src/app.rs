//! The dashboard's state and what each key does to it. Pure: a key changes the state and
//! may ask for effects (an API call, quitting), which the event loop carries out, so every
//! transition is tested without a terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::model::Snapshot;
use crate::source::Link;

/// The silence duration Enter takes when nothing is typed.
pub const SILENCE_SUGGESTION: &str = "1h";

/// The longest silence the dashboard sets.
const MAX_SILENCE: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// The screens, by the names `:` takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum View {
    Overview,
    /// One service, by name.
    Service(String),
    Alerts,
    Healer,
    Logs,
    Nodes,
    /// Where the cluster listens, the demo logins, where the admin token is.
    Info,
    /// One trace, by id: its span waterfall and log lines.
    Trace(String),
}

impl View {
    pub const NAMES: [&'static str; 8] = ["overview", "service", "alerts", "healer", "logs", "nodes", "info", "trace"];

    pub fn title(&self) -> String {
        match self {
            View::Overview => "overview".into(),
            View::Service(name) => format!("service {name}"),
            View::Alerts => "alerts".into(),
            View::Healer => "healer".into(),
            View::Logs => "logs".into(),
            View::Nodes => "nodes".into(),
            View::Info => "info".into(),
            View::Trace(id) => format!("trace {id}"),
        }
    }

    /// `:name [arg]` → a view; prefixes work (`:al`).
    fn parse(command: &str, first_service: Option<&str>) -> Option<View> {
        let mut words = command.split_whitespace();
        let word = words.next()?;
        let arg = words.next();
        let name = View::NAMES.iter().find(|n| n.starts_with(word))?;
        Some(match *name {
            "overview" => View::Overview,
            "service" => View::Service(arg.or(first_service)?.to_string()),
            "alerts" => View::Alerts,
            "healer" => View::Healer,
            "logs" => View::Logs,
            "info" => View::Info,
            "trace" => View::Trace(arg?.to_string()),
            _ => View::Nodes,
        })
    }
}

/// Faults the chaos menu injects (the demo cluster's `hale chaos`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChaosKind {
    Kill,
    Hang,
    Latency,
    Errors,
    NodeDown,
    NodeUp,
    /// Cut the node off the network (`hale up --netns` only): its processes keep running.
    Partition,
    /// Give the node a whole link again: no cut, no delay, no loss.
    Heal,
    Delay,
    Loss,
}

impl ChaosKind {
    pub const REPLICA: [ChaosKind; 4] = [ChaosKind::Kill, ChaosKind::Hang, ChaosKind::Latency, ChaosKind::Errors];
    pub const NODE: [ChaosKind; 6] = [
        ChaosKind::NodeDown,
        ChaosKind::NodeUp,
        ChaosKind::Partition,
        ChaosKind::Heal,
        ChaosKind::Delay,
        ChaosKind::Loss,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ChaosKind::Kill => "kill -9",
            ChaosKind::Hang => "hang (60 s)",
            ChaosKind::Latency => "latency 300 ms (60 s)",
            ChaosKind::Errors => "errors 50 % (60 s)",
            ChaosKind::NodeDown => "node down",
            ChaosKind::NodeUp => "node up",
            ChaosKind::Partition => "partition (netns)",
            ChaosKind::Heal => "heal the link (netns)",
            ChaosKind::Delay => "delay 200 ms (netns)",
            ChaosKind::Loss => "lose 10 % of frames (netns)",
        }
    }
}

/// Something the event loop must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Quit,
    Refresh,
    Approve(String),
    Reject(String),
    SetPaused(bool),
    Reset(String),
    /// Silence alerts matching these labels for this long.
    Silence {
        matchers: Vec<(String, String)>,
        duration: String,
    },
    ExpireSilence(String),
    Chaos {
        kind: ChaosKind,
        target: String,
    },
}

impl Effect {
    /// What the confirmation dialog asks.
    pub fn question(&self) -> String {
        match self {
            Effect::Quit => "Quit? The cluster this dashboard started stops.".into(),
            Effect::Refresh => "Refresh?".into(),
            Effect::Approve(id) => format!("Approve action {id}? It runs at once."),
            Effect::Reject(id) => format!("Reject action {id}?"),
            Effect::SetPaused(true) => "Pause the healer? No automatic repair until resumed.".into(),
            Effect::SetPaused(false) => "Resume the healer?".into(),
            Effect::Reset(target) => format!("Reset {target}? Automatic repairs on it resume."),
            Effect::Silence { matchers, duration } => {
                let m: Vec<String> = matchers.iter().map(|(k, v)| format!("{k}={v}")).collect();
                format!("Silence {{{}}} for {duration}?", m.join(", "))
            }
            Effect::Chaos { kind, target } => format!("Inject `{}` into {target}?", kind.label()),
            Effect::ExpireSilence(id) => format!("Expire silence {id}? Its alerts notify again."),
        }
    }
}

/// A popup over the view.
#[derive(Debug, Clone, PartialEq)]
pub enum Modal {
    Help,
    /// `:` typed so far.
    Command(String),
    /// `/` typed so far.
    Filter(String),
    /// Yes or no to an effect.
    Confirm(Effect),
    /// Duration for a silence, typed so far; empty takes [`SILENCE_SUGGESTION`] (the
    /// suggestion is shown, not pre-typed, so what is typed is the duration).
    SilenceFor {
        matchers: Vec<(String, String)>,
        typed: String,
    },
    /// The chaos menu for a replica or a node, with the highlighted entry.
    Chaos {
        target: String,
        node: bool,
        selected: usize,
    },
}

pub struct App {
    pub view: View,
    /// Where Esc goes back to.
    back: Vec<View>,
    pub modal: Option<Modal>,
    /// Per-view filter (`/`).
    pub filter: String,
    /// Selected row of the current view's main list.
    pub selected: usize,
    pub snapshot: Snapshot,
    pub collector: Link,
    pub healer: Link,
    /// No actions at all (`--readonly`).
    pub readonly: bool,
    /// The chaos menu (only where the dashboard runs its own demo cluster).
    pub chaos: bool,
    /// Quitting stops the cluster (asks first).
    pub owns_cluster: bool,
    /// Logs: paused (no new lines) and how far scrolled back.
    pub logs_paused: bool,
    pub logs_scroll: usize,
    /// The last effect's outcome, shown in the footer.
    pub status: Option<String>,
    /// What the binary knows about the cluster (the info view); `None` when it knows
    /// nothing beyond the APIs.
    pub info: Option<crate::info::ClusterInfo>,
}

impl App {
    pub fn new(readonly: bool, chaos: bool, owns_cluster: bool) -> App {
        App {
            view: View::Overview,
            back: Vec::new(),
            modal: None,
            filter: String::new(),
            selected: 0,
            snapshot: Snapshot::default(),
            collector: Link::Connecting,
            healer: Link::Connecting,
            readonly,
            chaos: chaos && !readonly,
            owns_cluster,
            logs_paused: false,
            logs_scroll: 0,
            status: None,
            info: None,
        }
    }

    fn go(&mut self, view: View) {
        if view != self.view {
            self.back.push(std::mem::replace(&mut self.view, view));
            self.selected = 0;
            self.filter.clear();
            self.logs_scroll = 0;
            self.logs_paused = false;
        }
    }

    /// Takes a fresh snapshot, keeping the selection on the same row (new actions arrive
    /// on top: the highlight must not slide onto another one), and the old log lines while
    /// the logs are paused.
    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        let selected = self.selected_row();
        let logs = if self.logs_paused { self.snapshot.logs.take() } else { None };
        self.snapshot = snapshot;
        if logs.is_some() {
            self.snapshot.logs = logs;
        }
        let rows = self.rows();
        self.selected = match selected.and_then(|r| rows.iter().position(|x| *x == r)) {
            Some(i) => i,
            None => self.selected.min(rows.len().saturating_sub(1)),
        };
    }

    /// Rows of the current view's main list, after the filter: what Enter and the action
    /// keys apply to.
    pub fn rows(&self) -> Vec<Row> {
        let filter = self.filter.to_lowercase();
        let keep = |text: &str| filter.is_empty() || text.to_lowercase().contains(&filter);
        let s = &self.snapshot;
        match &self.view {
            View::Overview => s
                .services
                .iter()
                .flatten()
                .filter(|svc| keep(&svc.name))
                .map(|svc| Row::Service(svc.name.clone()))
                .collect(),
            View::Service(name) => s
                .services
                .iter()
                .flatten()
                .filter(|svc| &svc.name == name)
                .flat_map(|svc| svc.replicas.iter())
                // The replicas take the filter's plain words; `level:`-style fields are
                // for the log panel below them.
                .filter(|r| {
                    let words = crate::model::LogFilter::parse(&self.filter).words;
                    words.iter().all(|w| r.instance.to_lowercase().contains(w.as_str()))
                })
                .map(|r| Row::Replica(r.instance.clone()))
                // Below the replicas, the service's slowest and failed traces.
                .chain(s.traces.iter().flat_map(|t| t.rows()).map(|t| Row::Trace(t.id.clone())))
                .collect(),
            View::Alerts if s.alerts.is_none() => Vec::new(),
            View::Alerts => {
                let alerts = self.visible_alerts().len();
                let silences = s.silences.iter().flatten().map(|x| Row::Silence(x.id.clone()));
                (0..alerts).map(Row::Alert).chain(silences).collect()
            }
            View::Healer => s
                .healer
                .iter()
                .flat_map(|h| h.actions.iter())
                .filter(|a| keep(&format!("{} {} {} {}", a.kind, a.target, a.status, a.alert)))
                .map(|a| Row::Action(a.id.clone()))
                .collect(),
            View::Nodes => {
                s.nodes.iter().flatten().filter(|n| keep(&n.node)).map(|n| Row::Node(n.node.clone())).collect()
            }
            View::Trace(_) => (0..s.trace.as_ref().map_or(0, |t| t.spans.len())).map(Row::Span).collect(),
            View::Logs | View::Info => Vec::new(),
        }
    }

    /// The alerts view's alerts after the filter, in the collector's groups: the order
    /// rows are numbered in.
    pub fn visible_alerts(&self) -> Vec<&crate::model::Alert> {
        let filter = self.filter.to_lowercase();
        let keep = |a: &crate::model::Alert| {
            filter.is_empty() || format!("{} {:?}", a.name, a.labels).to_lowercase().contains(&filter)
        };
        self.snapshot.alert_groups(keep).into_iter().flat_map(|(_, alerts)| alerts).collect()
    }

    fn selected_row(&self) -> Option<Row> {
        self.rows().into_iter().nth(self.selected)
    }

    /// Applies a key; returns what the event loop must do.
    pub fn on_key(&mut self, key: KeyEvent) -> Option<Effect> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            // Stopping a cluster asks first; a second Ctrl-C (or y) confirms.
            if self.owns_cluster && self.modal != Some(Modal::Confirm(Effect::Quit)) {
                self.modal = Some(Modal::Confirm(Effect::Quit));
                return None;
            }
            self.modal = None;
            return Some(Effect::Quit);
        }
        // Ctrl-U empties the line being typed, as in a shell; outside a prompt, the filter.
        let ctrl_u = key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('u');
        if ctrl_u {
            match &mut self.modal {
                Some(Modal::Filter(typed)) => {
                    typed.clear();
                    self.filter.clear();
                    self.selected = 0;
                }
                Some(Modal::Command(typed)) | Some(Modal::SilenceFor { typed, .. }) => typed.clear(),
                Some(_) => {}
                None => {
                    self.filter.clear();
                    self.selected = 0;
                }
            }
            return None;
        }
        if let Some(modal) = self.modal.take() {
            return self.on_modal_key(modal, key);
        }
        let rows = self.rows().len();
        match key.code {
            KeyCode::Char('q') => {
                if self.owns_cluster {
                    self.modal = Some(Modal::Confirm(Effect::Quit));
                    return None;
                }
                return Some(Effect::Quit);
            }
            KeyCode::Char('?') => self.modal = Some(Modal::Help),
            KeyCode::Char(':') => self.modal = Some(Modal::Command(String::new())),
            KeyCode::Char('/') => self.modal = Some(Modal::Filter(self.filter.clone())),
            KeyCode::Esc => {
                if !self.filter.is_empty() {
                    self.filter.clear();
                } else if let Some(prev) = self.back.pop() {
                    self.view = prev;
                    self.selected = 0;
                }
            }
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(rows.saturating_sub(1)),
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = rows.saturating_sub(1),
            KeyCode::Enter => self.drill_down(),
            KeyCode::Char('r') => return Some(Effect::Refresh),
            KeyCode::Char('i') => self.go(View::Info),
            KeyCode::Char('t') if self.view == View::Healer && self.open_trace() => {}
            KeyCode::Char(' ') if self.view == View::Logs => self.logs_paused = !self.logs_paused,
            KeyCode::PageUp if self.view == View::Logs => self.logs_scroll += 10,
            KeyCode::PageDown if self.view == View::Logs => self.logs_scroll = self.logs_scroll.saturating_sub(10),
            _ if self.readonly => {}
            KeyCode::Char(c) => self.action_key(c),
            _ => {}
        }
        None
    }

    /// Enter: from a service to its replicas, from a replica to its logs, from an alert or
    /// a repair to the service (or node) it is about.
    fn drill_down(&mut self) {
        let service_of = |app: &App, instance: &str| {
            app.snapshot
                .services
                .iter()
                .flatten()
                .find(|s| s.replicas.iter().any(|r| r.instance == instance))
                .map(|s| s.name.clone())
        };
        let target = match self.selected_row() {
            Some(Row::Service(name)) => Some(View::Service(name)),
            Some(Row::Replica(instance)) => {
                self.go(View::Logs);
                self.filter = format!("instance:{instance}");
                return;
            }
            Some(Row::Node(_)) => Some(View::Logs),
            Some(Row::Trace(id)) => Some(View::Trace(id)),
            Some(Row::Alert(i)) => self.visible_alerts().get(i).and_then(|a| {
                let labels = &a.labels;
                labels
                    .get("service")
                    .or(labels.get("sloth_service"))
                    .map(|s| View::Service(s.clone()))
                    .or_else(|| labels.get("instance").and_then(|i| service_of(self, i)).map(View::Service))
                    .or_else(|| labels.get("node").map(|_| View::Nodes))
            }),
            Some(Row::Action(id)) => {
                let target = self.snapshot.healer.as_ref().and_then(|h| h.actions.iter().find(|a| a.id == id));
                target.and_then(|a| match a.target.split_once('/') {
                    Some(("instance", i)) => service_of(self, i).map(View::Service),
                    Some(("service", s)) => Some(View::Service(s.to_string())),
                    Some(("node", _)) => Some(View::Nodes),
                    _ => None,
                })
            }
            Some(Row::Silence(_)) | Some(Row::Span(_)) | None => None,
        };
        if let Some(view) = target {
            self.go(view);
        }
    }

    /// `t` on a repair: its own trace.
    fn open_trace(&mut self) -> bool {
        let Some(Row::Action(id)) = self.selected_row() else { return false };
        let trace = self.snapshot.healer.as_ref().and_then(|h| h.actions.iter().find(|a| a.id == id)?.trace_id.clone());
        match trace {
            Some(trace) => self.go(View::Trace(trace)),
            None => self.status = Some("this action has no trace (the healer exports none)".into()),
        }
        true
    }

    /// Action keys, each of which ends in a confirmation.
    fn action_key(&mut self, c: char) {
        let row = self.selected_row();
        let awaiting = |id: &str| {
            self.snapshot.healer.as_ref().is_some_and(|h| h.actions.iter().any(|a| a.id == id && a.awaiting_approval()))
        };
        let confirm = match (c, &self.view, row) {
            ('a', View::Healer, Some(Row::Action(id))) if awaiting(&id) => Some(Effect::Approve(id)),
            ('x', View::Healer, Some(Row::Action(id))) if awaiting(&id) => Some(Effect::Reject(id)),
            ('p', View::Healer, _) => {
                let paused = self.snapshot.healer.as_ref().is_some_and(|h| h.paused);
                Some(Effect::SetPaused(!paused))
            }
            ('R', View::Healer, row) => {
                // The selected action's target if it waits for a human, else the first that does.
                let healer = self.snapshot.healer.as_ref();
                let selected = row.and_then(|r| match r {
                    Row::Action(id) => healer?.actions.iter().find(|a| a.id == id).map(|a| a.target.clone()),
                    _ => None,
                });
                let waiting = |t: &str| healer.is_some_and(|h| h.needs_human.iter().any(|n| n.0 == t));
                selected
                    .filter(|t| waiting(t))
                    .or_else(|| healer.and_then(|h| h.needs_human.first().map(|t| t.0.clone())))
                    .map(Effect::Reset)
            }
            ('e', View::Alerts, Some(Row::Silence(id))) => Some(Effect::ExpireSilence(id)),
            ('s', View::Alerts, Some(Row::Alert(i))) => {
                let alerts = self.visible_alerts();
                if let Some(alert) = alerts.get(i) {
                    let matchers = ["alertname", "instance", "service", "node", "sloth_id"]
                        .iter()
                        .filter_map(|k| alert.labels.get(*k).map(|v| (k.to_string(), v.clone())))
                        .collect();
                    self.modal = Some(Modal::SilenceFor { matchers, typed: String::new() });
                }
                None
            }
            ('c', View::Service(_), Some(Row::Replica(instance))) if self.chaos => {
                self.modal = Some(Modal::Chaos { target: instance, node: false, selected: 0 });
                None
            }
            ('c', View::Nodes, Some(Row::Node(node))) if self.chaos => {
                self.modal = Some(Modal::Chaos { target: node, node: true, selected: 0 });
                None
            }
            _ => None,
        };
        if let Some(effect) = confirm {
            self.modal = Some(Modal::Confirm(effect));
        }
    }

    fn on_modal_key(&mut self, modal: Modal, key: KeyEvent) -> Option<Effect> {
        match modal {
            Modal::Help => {
                // Any key closes the help.
            }
            Modal::Command(mut typed) => match key.code {
                KeyCode::Enter => {
                    let first = self.snapshot.services.iter().flatten().next().map(|s| s.name.clone());
                    match View::parse(&typed, first.as_deref()) {
                        Some(view) => self.go(view),
                        None if typed.trim() == "q" || typed.trim() == "quit" => {
                            return self.on_key(KeyEvent::from(KeyCode::Char('q')));
                        }
                        None => self.status = Some(format!("no view {typed:?}; views: {}", View::NAMES.join(", "))),
                    }
                }
                KeyCode::Esc => {}
                KeyCode::Backspace => {
                    typed.pop();
                    self.modal = Some(Modal::Command(typed));
                }
                KeyCode::Char(c) => {
                    typed.push(c);
                    self.modal = Some(Modal::Command(typed));
                }
                _ => self.modal = Some(Modal::Command(typed)),
            },
            Modal::Filter(mut typed) => match key.code {
                KeyCode::Enter => {
                    self.filter = typed;
                    self.selected = 0;
                }
                KeyCode::Esc => {}
                KeyCode::Backspace => {
                    typed.pop();
                    self.filter = typed.clone();
                    self.modal = Some(Modal::Filter(typed));
                }
                KeyCode::Char(c) => {
                    typed.push(c);
                    self.filter = typed.clone();
                    self.selected = 0;
                    self.modal = Some(Modal::Filter(typed));
                }
                _ => self.modal = Some(Modal::Filter(typed)),
            },
            Modal::Confirm(effect) => match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') => return Some(effect),
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc => {}
                _ => self.modal = Some(Modal::Confirm(effect)),
            },
            Modal::SilenceFor { matchers, mut typed } => match key.code {
                KeyCode::Enter if typed.trim().is_empty() => {
                    let duration = SILENCE_SUGGESTION.to_string();
                    self.modal = Some(Modal::Confirm(Effect::Silence { matchers, duration }));
                }
                KeyCode::Enter => match humantime::parse_duration(&typed) {
                    Ok(d) if d > MAX_SILENCE => {
                        self.status = Some(format!("{typed} is longer than a year; silence for less"));
                        self.modal = Some(Modal::SilenceFor { matchers, typed });
                    }
                    Ok(_) => self.modal = Some(Modal::Confirm(Effect::Silence { matchers, duration: typed })),
                    Err(_) => {
                        self.status = Some(format!("{typed:?} is not a duration; try 30m, 2h or 1d"));
                        self.modal = Some(Modal::SilenceFor { matchers, typed });
                    }
                },
                KeyCode::Esc => {}
                KeyCode::Backspace => {
                    typed.pop();
                    self.modal = Some(Modal::SilenceFor { matchers, typed });
                }
                KeyCode::Char(c) => {
                    typed.push(c);
                    self.modal = Some(Modal::SilenceFor { matchers, typed });
                }
                _ => self.modal = Some(Modal::SilenceFor { matchers, typed }),
            },
            Modal::Chaos { target, node, selected } => {
                let kinds: &[ChaosKind] = if node { &ChaosKind::NODE } else { &ChaosKind::REPLICA };
                match key.code {
                    KeyCode::Down | KeyCode::Char('j') => {
                        let selected = (selected + 1).min(kinds.len() - 1);
                        self.modal = Some(Modal::Chaos { target, node, selected });
                    }
                    KeyCode::Up | KeyCode::Char('k') => {
                        self.modal = Some(Modal::Chaos { target, node, selected: selected.saturating_sub(1) });
                    }
                    KeyCode::Enter => {
                        self.modal = Some(Modal::Confirm(Effect::Chaos { kind: kinds[selected], target }));
                    }
                    KeyCode::Esc => {}
                    _ => self.modal = Some(Modal::Chaos { target, node, selected }),
                }
            }
        }
        None
    }
}

/// A row of a view's main list.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Service(String),
    Replica(String),
    /// Position among [`App::visible_alerts`].
    Alert(usize),
    Silence(String),
    Action(String),
    Node(String),
    /// A trace, by id (the service view's list).
    Trace(String),
    /// A span of the opened trace, by its place in the waterfall.
    Span(usize),
}
