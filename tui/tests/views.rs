//! State → screen: every view at 80×24 and 160×48, drawn from fixture state (a demo
//! cluster with a fault in progress, a disconnected collector, no data at all), compared
//! with the snapshots in `tests/snapshots` (review changes with `cargo insta review`).

use hale_core::cluster::AgentState;
use hale_tui::app::{App, Modal, View};
use hale_tui::model::*;
use hale_tui::source::Link;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

use hale_tui::fixture::{NOW, demo};

fn app_with(snapshot: Snapshot) -> App {
    let mut app = App::new(false, true, true);
    app.snapshot = snapshot;
    app.collector = Link::Connected;
    app.healer = Link::Connected;
    app
}

fn render(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal.draw(|f| hale_tui::ui::draw(f, app)).expect("draw");
    terminal.backend().to_string()
}

fn views() -> Vec<View> {
    vec![
        View::Overview,
        View::Service("search".into()),
        View::Alerts,
        View::Healer,
        View::Logs,
        View::Nodes,
        View::Trace("4bf92f3577b34da6a3ce929d0e0e4736".into()),
    ]
}

fn name(view: &View) -> String {
    view.title().replace(' ', "_")
}

#[test]
fn every_view_of_a_cluster_with_a_fault_in_progress() {
    for view in views() {
        let mut app = app_with(demo());
        app.view = view.clone();
        for (w, h) in [(80, 24), (160, 48)] {
            insta::assert_snapshot!(format!("{}_{w}x{h}", name(&view)), render(&app, w, h));
        }
    }
}

#[test]
fn every_view_while_the_collector_is_unreachable() {
    for view in views() {
        let mut app = app_with(demo());
        app.view = view.clone();
        app.collector = Link::Reconnecting { attempt: 3, next_ms: NOW + 2_000, error: "connection refused".into() };
        for (w, h) in [(80, 24), (160, 48)] {
            insta::assert_snapshot!(format!("disconnected_{}_{w}x{h}", name(&view)), render(&app, w, h));
        }
    }
}

#[test]
fn every_view_with_no_data_yet() {
    for view in views() {
        let mut app = app_with(Snapshot { at_ms: NOW, ..Snapshot::default() });
        app.collector = Link::Connecting;
        app.healer = Link::Connecting;
        app.view = view.clone();
        for (w, h) in [(80, 24), (160, 48)] {
            insta::assert_snapshot!(format!("no_data_{}_{w}x{h}", name(&view)), render(&app, w, h));
        }
    }
}

#[test]
fn popups_help_confirmation_and_chaos_menu() {
    let mut app = app_with(demo());
    app.modal = Some(Modal::Help);
    insta::assert_snapshot!("help_80x24", render(&app, 80, 24));
    app.view = View::Service("search".into());
    app.modal = Some(Modal::Chaos { target: "search-1".into(), node: false, selected: 1 });
    insta::assert_snapshot!("chaos_menu_80x24", render(&app, 80, 24));
    app.modal = Some(Modal::Confirm(hale_tui::app::Effect::Chaos {
        kind: hale_tui::app::ChaosKind::Hang,
        target: "search-1".into(),
    }));
    insta::assert_snapshot!("confirm_80x24", render(&app, 80, 24));
}

#[test]
fn read_only_shows_no_action_keys() {
    let mut app = App::new(true, true, false);
    app.snapshot = demo();
    app.collector = Link::Connected;
    app.healer = Link::Connected;
    app.view = View::Healer;
    let screen = render(&app, 160, 48);
    assert!(!screen.contains("approve") && !screen.contains("chaos"), "{screen}");
    assert!(screen.contains("read-only"));
}

#[test]
fn any_size_draws_without_panicking() {
    for view in views() {
        let mut app = app_with(demo());
        app.view = view;
        for (w, h) in [(1, 1), (20, 5), (40, 10), (79, 23), (80, 24), (300, 100)] {
            render(&app, w, h);
        }
        app.modal = Some(Modal::Help);
        render(&app, 20, 5);
    }
}

/// Issue #12, finding 17: what `hale up` printed before the dashboard took the screen —
/// the URLs, the demo logins, where the admin token is, the data dir — is one key away.
#[test]
fn the_info_view_shows_urls_logins_and_where_the_token_is() {
    let mut app = app_with(demo());
    app.info = Some(hale_tui::fixture::info());
    app.view = View::Info;
    for (w, h) in [(80, 24), (160, 48)] {
        let screen = render(&app, w, h);
        for want in ["http://127.0.0.1:8080", "127.0.0.1:9464", "127.0.0.1:9465", "shopper", "hale-shopper"] {
            assert!(screen.contains(want), "{want} at {w}x{h}:\n{screen}");
        }
        assert!(screen.contains("/home/sre/.hale/cluster.toml"), "where the admin token is:\n{screen}");
        insta::assert_snapshot!(format!("info_{w}x{h}"), screen);
    }
    // The footer offers it on every view once the dashboard knows its cluster.
    app.view = View::Overview;
    assert!(render(&app, 80, 24).contains("i info"));
}

/// Issue #12, finding 18: a notification group's labels are shown whole, however long
/// (they were cut at 24 columns).
#[test]
fn alert_group_names_are_not_cut_off() {
    let mut snapshot = demo();
    snapshot.alert_group_by = vec!["alertname".into(), "service".into()];
    if let Some(alerts) = snapshot.alerts.as_mut() {
        let mut slo = alerts[0].clone();
        slo.name = "CheckoutAvailabilitySLO".into();
        slo.labels = [("alertname", "CheckoutAvailabilitySLO"), ("service", "orders"), ("severity", "page")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        alerts.push(slo);
    }
    let mut app = app_with(snapshot);
    app.view = View::Alerts;
    let screen = render(&app, 80, 24);
    assert!(screen.contains("{alertname=CheckoutAvailabilitySLO service=orders}"), "{screen}");
    insta::assert_snapshot!("alerts_long_groups_80x24", screen);
}

/// Issue #12, finding 18: a firing alert an active silence covers says so in the
/// overview (it was drawn like any other, though nobody is notified).
#[test]
fn silenced_alerts_are_marked_in_the_overview() {
    let mut snapshot = demo();
    if let Some(silences) = snapshot.silences.as_mut() {
        let mut s = silences[0].clone();
        s.id = "sil-2".into();
        s.matchers = "alertname=\"ReplicaDown\", instance=~\"search-.*\"".into();
        s.matcher_list = vec![
            Matcher { name: "alertname".into(), value: "ReplicaDown".into(), equal: true, regex: false },
            Matcher { name: "instance".into(), value: "search-.*".into(), equal: true, regex: true },
        ];
        silences.push(s);
    }
    let app = app_with(snapshot);
    let screen = render(&app, 80, 24);
    let line = screen.lines().find(|l| l.contains("ReplicaDown")).unwrap_or_default();
    assert!(line.contains("silenced"), "{screen}");
    insta::assert_snapshot!("overview_silenced_80x24", screen);
}

/// Issue #12, finding 12: an agent that went silent a few intervals ago is drawn stale,
/// one gone longer down, neither as up — in the overview and the nodes view.
#[test]
fn a_silent_agent_is_drawn_stale_then_down() {
    let mut snapshot = demo();
    let nodes = snapshot.nodes.as_mut().expect("nodes");
    (nodes[1].agent, nodes[1].agent_up) = (AgentState::Stale, false);
    (nodes[2].agent, nodes[2].agent_up) = (AgentState::Down, false);
    let mut app = app_with(snapshot);
    for view in [View::Overview, View::Nodes] {
        app.view = view;
        let screen = render(&app, 160, 48);
        let line = |node: &str| screen.lines().find(|l| l.contains(node)).unwrap_or_default().to_string();
        assert!(line("node-2").contains("stale") && !line("node-2").contains(" up "), "{screen}");
        assert!(line("node-3").contains("DOWN"), "{screen}");
        assert!(line("node-1").contains("up"), "{screen}");
    }
}

/// #21: a collector whose disk is full refuses telemetry: the screen says so on every
/// view, because every figure on it stops moving.
#[test]
fn a_collector_that_refuses_telemetry_is_shown_on_every_view() {
    let why = "the collector's disk is full: 1024 bytes free under /var/lib/hale, below the 268435456-byte reserve";
    for view in views() {
        let mut app = app_with(Snapshot { ingest_refused: Some(why.into()), ..demo() });
        app.view = view.clone();
        let screen = render(&app, 160, 48);
        assert!(
            screen.contains("collector refuses telemetry: the collector's disk is full"),
            "{}:\n{screen}",
            name(&view)
        );
    }
}
