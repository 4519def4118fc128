//! `hale bench tui`: per view, the time to draw one frame of the demo cluster's state.

#[derive(clap::Args)]
pub struct TuiBenchArgs {
    #[arg(long, default_value_t = 2000)]
    frames: usize,
    #[arg(long, default_value_t = 160)]
    width: u16,
    #[arg(long, default_value_t = 48)]
    height: u16,
}

/// Prints p50, p99 and the slowest frame of each view.
pub fn run(args: &TuiBenchArgs) {
    println!("{} frames of each view at {}x{} (the demo fixture):", args.frames, args.width, args.height);
    for (view, mut times) in hale_tui::bench::frame_times(args.width, args.height, args.frames.max(1)) {
        times.sort();
        let pick = |q: f64| times[crate::bench_stats::rank(times.len(), q)];
        println!(
            "  {view:<16} p50 {:>7.1} µs   p99 {:>7.1} µs   max {:>7.1} µs",
            pick(0.5).as_secs_f64() * 1e6,
            pick(0.99).as_secs_f64() * 1e6,
            times.last().map_or(0.0, |t| t.as_secs_f64() * 1e6)
        );
    }
}
