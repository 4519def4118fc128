//! The AFL++ entry point: `hale-fuzz <target>` runs one target on what AFL++ feeds it
//! (persistent mode). Built with `cargo afl build --features afl --bin hale-fuzz`;
//! FUZZING.md has the whole command.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = hale_fuzz::target(&name) else {
        let names: Vec<&str> = hale_fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!("usage: hale-fuzz <target>; targets: {}", names.join(", "));
        std::process::exit(2);
    };
    let run = target.run;
    afl::fuzz!(|data: &[u8]| run(data));
}
