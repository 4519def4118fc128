//! Input → state: what each key does, with no terminal.

use hale_core::cluster::NodeView;
use hale_tui::app::{App, ChaosKind, Effect, Modal, View};
use hale_tui::model::*;
use hale_tui::source::Link;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

fn key(c: char) -> KeyEvent {
    KeyEvent::from(KeyCode::Char(c))
}

fn code(c: KeyCode) -> KeyEvent {
    KeyEvent::from(c)
}

fn typed(app: &mut App, text: &str) -> Option<Effect> {
    let mut last = None;
    for c in text.chars() {
        last = app.on_key(key(c));
    }
    last
}

/// `:command` and enter: to a view by its name.
fn go(app: &mut App, command: &str) {
    typed(app, &format!(":{command}"));
    app.on_key(code(KeyCode::Enter));
}

fn snapshot() -> Snapshot {
    let replica = |name: &str, state| Replica {
        instance: name.into(),
        node: Some("node-1".into()),
        state,
        restarts: Some(0.0),
        last_error: None,
    };
    let action = |id: &str, status: &str| Action {
        id: id.into(),
        kind: "restart".into(),
        policy: "p".into(),
        target: "instance/search-1".into(),
        status: status.into(),
        alert: "ReplicaDown".into(),
        created_ms: 0,
        updated_ms: 0,
        detail: String::new(),
        trace_id: (status == "succeeded").then(|| format!("{:0>32}", id.trim_start_matches("act-"))),
    };
    Snapshot {
        services: Some(vec![
            Service { name: "auth".into(), restarts_1h: None, replicas: vec![replica("auth-1", ReplicaState::Ready)] },
            Service {
                name: "search".into(),
                restarts_1h: None,
                replicas: vec![replica("search-1", ReplicaState::NotReady), replica("search-2", ReplicaState::Ready)],
            },
        ]),
        nodes: Some(vec![NodeView {
            cpu_used_ratio: None,
            memory_used_ratio: None,
            disk_used_ratio: None,
            ..hale_tui::fixture::node("node-1", 0.0, 0.0, 0.0)
        }]),
        alerts: Some(vec![Alert {
            name: "ReplicaDown".into(),
            labels: [("alertname", "ReplicaDown"), ("instance", "search-1"), ("severity", "page")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            firing: true,
            active_at: String::new(),
            summary: String::new(),
        }]),
        alert_group_by: vec!["alertname".into()],
        silences: Some(vec![Silence {
            id: "sil-1".into(),
            matchers: "alertname=\"DiskFilling\"".into(),
            state: "active".into(),
            ends_at: String::new(),
            comment: String::new(),
            matcher_list: vec![Matcher {
                name: "alertname".into(),
                value: "DiskFilling".into(),
                equal: true,
                regex: false,
            }],
        }]),
        healer: Some(Healer {
            paused: false,
            dry_run: false,
            actions: vec![action("act-2", "awaiting_approval"), action("act-1", "succeeded")],
            needs_human: vec![("instance/orders-2".into(), "failed".into())],
            refused: Vec::new(),
        }),
        traces: Some(ServiceTraces {
            slowest: vec![TraceRow {
                id: "slow-trace".into(),
                root: "gateway: GET /api/search".into(),
                start_ms: 0,
                duration_ms: 900,
                failed: false,
            }],
            failed: Vec::new(),
        }),
        ..Snapshot::default()
    }
}

/// From a service to one of its slow traces, and from a repair to its own trace.
#[test]
fn enter_opens_a_services_trace_and_t_opens_a_repairs_trace() {
    let mut app = App::new(false, false, false);
    app.snapshot = snapshot();
    go(&mut app, "service search");
    // Two replicas, then the trace.
    for _ in 0..2 {
        app.on_key(key('j'));
    }
    app.on_key(code(KeyCode::Enter));
    assert_eq!(app.view, View::Trace("slow-trace".into()));
    app.on_key(code(KeyCode::Esc));
    assert_eq!(app.view, View::Service("search".into()));
    go(&mut app, "healer");
    app.on_key(key('t'));
    assert_eq!(app.view, View::Healer, "act-2 awaits approval: no trace yet");
    assert!(app.status.as_deref().is_some_and(|s| s.contains("no trace")), "{:?}", app.status);
    app.on_key(key('j'));
    app.on_key(key('t'));
    assert_eq!(app.view, View::Trace(format!("{:0>32}", "1")));
    go(&mut app, "trace abc");
    assert_eq!(app.view, View::Trace("abc".into()));
}

fn app(readonly: bool) -> App {
    let mut app = App::new(readonly, true, true);
    app.snapshot = snapshot();
    app.collector = Link::Connected;
    app.healer = Link::Connected;
    app
}

#[test]
fn colon_jumps_to_a_view_by_name_or_prefix_and_esc_goes_back() {
    let mut a = app(false);
    a.on_key(key(':'));
    assert_eq!(a.modal, Some(Modal::Command(String::new())));
    typed(&mut a, "al");
    a.on_key(code(KeyCode::Enter));
    assert_eq!((a.view.clone(), a.modal.clone()), (View::Alerts, None));
    go(&mut a, "service search");
    assert_eq!(a.view, View::Service("search".into()));
    a.on_key(code(KeyCode::Esc));
    assert_eq!(a.view, View::Alerts);
    a.on_key(code(KeyCode::Esc));
    assert_eq!(a.view, View::Overview);
    a.on_key(code(KeyCode::Esc));
    assert_eq!(a.view, View::Overview, "nothing further back");
    go(&mut a, "nonsense");
    assert_eq!(a.view, View::Overview);
    assert!(a.status.as_deref().is_some_and(|s| s.contains("no view")), "{:?}", a.status);
}

#[test]
fn moving_and_drilling_down() {
    let mut a = app(false);
    a.on_key(code(KeyCode::Down));
    a.on_key(key('j'));
    assert_eq!(a.selected, 1, "stops at the last service");
    a.on_key(key('k'));
    a.on_key(code(KeyCode::Up));
    assert_eq!(a.selected, 0);
    a.on_key(key('G'));
    a.on_key(code(KeyCode::Enter));
    assert_eq!(a.view, View::Service("search".into()));
    assert_eq!(a.selected, 0, "a new view starts at its top");
    a.on_key(code(KeyCode::Enter));
    assert_eq!(a.view, View::Logs, "a replica drills down to its logs");
    assert_eq!(a.filter, "instance:search-1");
    // From an alert, and from a repair, to the service they are about.
    go(&mut a, "alerts");
    a.on_key(code(KeyCode::Enter));
    assert_eq!(a.view, View::Service("search".into()), "ReplicaDown on search-1");
    go(&mut a, "healer");
    a.on_key(code(KeyCode::Enter));
    assert_eq!(a.view, View::Service("search".into()), "the restart of instance/search-1");
}

#[test]
fn slash_filters_the_current_list_live_and_esc_clears_it() {
    let mut a = app(false);
    a.on_key(key('/'));
    typed(&mut a, "sea");
    assert_eq!(a.filter, "sea");
    assert_eq!(a.rows().len(), 1, "only search");
    a.on_key(code(KeyCode::Enter));
    assert_eq!(a.modal, None);
    a.on_key(code(KeyCode::Enter));
    assert_eq!(a.view, View::Service("search".into()), "enter opens the filtered row");
    a.on_key(code(KeyCode::Esc));
    a.on_key(key('/'));
    typed(&mut a, "zzz");
    a.on_key(code(KeyCode::Enter));
    assert!(a.rows().is_empty());
    a.on_key(code(KeyCode::Esc));
    assert_eq!((a.filter.as_str(), a.rows().len()), ("", 2));
}

#[test]
fn every_action_asks_first_and_n_cancels() {
    let mut a = app(false);
    go(&mut a, "healer");
    assert_eq!(a.on_key(key('a')), None);
    assert_eq!(a.modal, Some(Modal::Confirm(Effect::Approve("act-2".into()))));
    assert_eq!(a.on_key(key('n')), None);
    assert_eq!(a.modal, None);
    a.on_key(key('x'));
    assert_eq!(a.on_key(key('y')), Some(Effect::Reject("act-2".into())));
    a.on_key(key('p'));
    assert_eq!(a.on_key(key('y')), Some(Effect::SetPaused(true)));
    a.on_key(key('R'));
    assert_eq!(a.on_key(key('y')), Some(Effect::Reset("instance/orders-2".into())));
    // An action that does not await approval cannot be approved.
    a.on_key(key('j'));
    assert_eq!(a.on_key(key('a')), None);
    assert_eq!(a.modal, None);
}

#[test]
fn silencing_an_alert_asks_for_a_duration_then_confirmation() {
    let mut a = app(false);
    go(&mut a, "alerts");
    a.on_key(key('s'));
    assert!(matches!(&a.modal, Some(Modal::SilenceFor { typed, .. }) if typed.is_empty()), "1h is suggested");
    typed(&mut a, "soon");
    a.on_key(code(KeyCode::Enter));
    assert!(a.status.as_deref().is_some_and(|s| s.contains("not a duration")));
    for _ in 0..4 {
        a.on_key(code(KeyCode::Backspace));
    }
    typed(&mut a, "30m");
    a.on_key(code(KeyCode::Enter));
    let effect = a.on_key(key('y')).expect("effect");
    let Effect::Silence { matchers, duration } = effect else { panic!("{effect:?}") };
    assert_eq!(duration, "30m");
    assert!(matchers.contains(&("alertname".into(), "ReplicaDown".into())));
    assert!(matchers.contains(&("instance".into(), "search-1".into())));
    // Below the alerts, the silences: `e` expires the selected one, after confirmation.
    a.on_key(key('j'));
    assert_eq!(a.on_key(key('e')), None);
    assert_eq!(a.on_key(key('y')), Some(Effect::ExpireSilence("sil-1".into())));
}

#[test]
fn the_chaos_menu_breaks_the_selected_replica_after_confirmation() {
    let mut a = app(false);
    go(&mut a, "service search");
    a.on_key(key('c'));
    assert_eq!(a.modal, Some(Modal::Chaos { target: "search-1".into(), node: false, selected: 0 }));
    a.on_key(key('j'));
    a.on_key(code(KeyCode::Enter));
    assert_eq!(a.on_key(key('y')), Some(Effect::Chaos { kind: ChaosKind::Hang, target: "search-1".into() }));
    go(&mut a, "nodes");
    a.on_key(key('c'));
    a.on_key(code(KeyCode::Enter));
    assert_eq!(a.on_key(key('y')), Some(Effect::Chaos { kind: ChaosKind::NodeDown, target: "node-1".into() }));
}

#[test]
fn read_only_ignores_every_action_key() {
    let mut a = app(true);
    for view in [":healer", ":alerts", ":service search", ":nodes"] {
        typed(&mut a, view);
        a.on_key(code(KeyCode::Enter));
        for k in ['a', 'x', 'p', 'R', 's', 'e', 'c'] {
            assert_eq!(a.on_key(key(k)), None);
            assert_eq!(a.modal, None, "{view} {k}");
        }
    }
}

#[test]
fn quitting_asks_when_it_stops_the_cluster_and_ctrl_c_twice_quits() {
    let mut a = app(false);
    assert_eq!(a.on_key(key('q')), None);
    assert_eq!(a.modal, Some(Modal::Confirm(Effect::Quit)));
    assert_eq!(a.on_key(key('y')), Some(Effect::Quit));
    let mut watching = App::new(false, false, false);
    assert_eq!(watching.on_key(key('q')), Some(Effect::Quit), "a dashboard on someone else's cluster just quits");
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(a.on_key(ctrl_c), None, "Ctrl-C on a cluster this dashboard runs asks too");
    assert_eq!(a.modal, Some(Modal::Confirm(Effect::Quit)));
    assert_eq!(a.on_key(ctrl_c), Some(Effect::Quit), "a second Ctrl-C confirms");
    assert_eq!(watching.on_key(ctrl_c), Some(Effect::Quit));
    a.on_key(key('?'));
    assert_eq!(a.modal, Some(Modal::Help));
    a.on_key(key('z'));
    assert_eq!(a.modal, None, "any key closes the help");
}

#[test]
fn the_log_filter_takes_fields_and_words() {
    let line = LogLine {
        time_ms: 0,
        service: "search".into(),
        instance: "search-1".into(),
        level: "error".into(),
        message: "request failed".into(),
        detail: "route=/api/search status=503".into(),
    };
    for (filter, matches) in [
        ("", true),
        ("service:search", true),
        ("service:orders", false),
        ("level:ERROR instance:search-1", true),
        ("level:warn", false),
        ("503 failed", true),
        ("503 timeout", false),
        ("service:search status=503", true),
    ] {
        assert_eq!(LogFilter::parse(filter).matches(&line), matches, "{filter:?}");
    }
}

#[test]
fn reset_takes_the_selected_actions_target_when_it_waits_for_a_human() {
    let mut a = app(false);
    if let Some(h) = a.snapshot.healer.as_mut() {
        h.needs_human.push(("instance/search-1".into(), "failed".into()));
    }
    go(&mut a, "healer");
    a.on_key(key('R'));
    assert_eq!(a.on_key(key('y')), Some(Effect::Reset("instance/search-1".into())), "the selected action's target");
}

#[test]
fn the_selection_stays_on_its_row_when_new_actions_arrive() {
    let mut a = app(false);
    go(&mut a, "healer");
    a.on_key(key('j'));
    assert_eq!(a.rows().get(a.selected), Some(&hale_tui::app::Row::Action("act-1".into())));
    let mut next = snapshot();
    if let Some(h) = next.healer.as_mut() {
        let mut newer = h.actions[0].clone();
        newer.id = "act-3".into();
        h.actions.insert(0, newer);
    }
    a.set_snapshot(next);
    assert_eq!(a.rows().get(a.selected), Some(&hale_tui::app::Row::Action("act-1".into())), "still act-1");
    // A filter with fields leaves a service's replicas alone.
    go(&mut a, "service search");
    a.on_key(key('/'));
    typed(&mut a, "level:error");
    a.on_key(code(KeyCode::Enter));
    let replicas = a.rows().into_iter().filter(|r| matches!(r, hale_tui::app::Row::Replica(_))).count();
    assert_eq!(replicas, 2);
    // A silence longer than a year is refused.
    go(&mut a, "alerts");
    a.on_key(key('s'));
    for _ in 0..2 {
        a.on_key(code(KeyCode::Backspace));
    }
    typed(&mut a, "8000y");
    a.on_key(code(KeyCode::Enter));
    assert!(matches!(a.modal, Some(Modal::SilenceFor { .. })), "{:?}", a.modal);
    assert!(a.status.as_deref().is_some_and(|s| s.contains("longer than a year")));
}

/// Issue #12, finding 17: `i` (or `:info`) opens the cluster's URLs and logins, also
/// read-only; Esc goes back.
#[test]
fn i_opens_the_info_view_and_esc_goes_back() {
    for readonly in [false, true] {
        let mut a = app(readonly);
        a.on_key(key('i'));
        assert_eq!(a.view, View::Info);
        a.on_key(code(KeyCode::Esc));
        assert_eq!(a.view, View::Overview);
        go(&mut a, "info");
        assert_eq!(a.view, View::Info);
    }
}

/// Issue #12, finding 18: what is typed in the silence dialog is the duration; it used
/// to be appended to the suggested `1h` (typing `30m` silenced for 1h30m). Enter alone
/// takes the suggestion.
#[test]
fn the_silence_duration_typed_replaces_the_suggestion() {
    let mut a = app(false);
    go(&mut a, "alerts");
    a.on_key(key('s'));
    typed(&mut a, "30m");
    a.on_key(code(KeyCode::Enter));
    let Some(Effect::Silence { duration, .. }) = a.on_key(key('y')) else { panic!("{:?}", a.modal) };
    assert_eq!(duration, "30m");
    a.on_key(key('s'));
    a.on_key(code(KeyCode::Enter));
    let Some(Effect::Silence { duration, .. }) = a.on_key(key('y')) else { panic!("{:?}", a.modal) };
    assert_eq!(duration, "1h", "enter alone takes the suggestion");
}

/// Issue #12, finding 18: Ctrl-U clears the filter (and the `:` and duration prompts),
/// as in a shell, instead of typing a `u`.
#[test]
fn ctrl_u_clears_the_filter() {
    let ctrl_u = KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL);
    let mut a = app(false);
    a.on_key(key('/'));
    typed(&mut a, "sea");
    a.on_key(ctrl_u);
    assert_eq!((a.filter.as_str(), a.modal.clone()), ("", Some(Modal::Filter(String::new()))));
    typed(&mut a, "auth");
    a.on_key(code(KeyCode::Enter));
    assert_eq!(a.filter, "auth");
    a.on_key(ctrl_u);
    assert_eq!(a.filter, "", "outside the prompt too");
    a.on_key(key(':'));
    typed(&mut a, "nod");
    a.on_key(ctrl_u);
    assert_eq!(a.modal, Some(Modal::Command(String::new())));
}

/// Issue #12, finding 18: a hung replica answers neither probe, but its process runs:
/// it is alive and not ready (`◐`), as the README says, not down (`✕`). One its agent
/// does not run (or is restarting) stays as it was.
#[test]
fn a_replica_whose_process_runs_is_alive_even_when_its_probes_time_out() {
    let mut s = snapshot();
    if let Some(services) = s.services.as_mut() {
        for r in services.iter_mut().flat_map(|svc| svc.replicas.iter_mut()) {
            r.state = ReplicaState::Down;
        }
    }
    let process = |name: &str, state: &str, pid: Option<u32>| Process {
        name: name.into(),
        service: name.split('-').next().unwrap_or_default().into(),
        pid,
        state: state.into(),
        restarts: 0,
        uptime_secs: Some(60),
        last_exit: None,
    };
    s.processes.insert(
        "node-1".into(),
        Some(vec![
            process("search-1", "running", Some(4242)),
            process("search-2", "stopped", None),
            process("auth-1", "restarting", None),
        ]),
    );
    s.mark_processes();
    let state = |name: &str| {
        s.services.iter().flatten().flat_map(|svc| svc.replicas.iter()).find(|r| r.instance == name).map(|r| r.state)
    };
    assert_eq!(state("search-1"), Some(ReplicaState::NotReady), "hung: alive, not ready");
    assert_eq!(state("search-2"), Some(ReplicaState::Down));
    assert_eq!(state("auth-1"), Some(ReplicaState::Restarting));
}
