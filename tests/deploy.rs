//! The deployment artefacts under `deploy/` are checked as their tools check them: the
//! systemd units by `systemd-analyze verify` (unknown keys, bad values, a command that
//! cannot run) and `systemd-analyze security --offline` (how much of the host a unit
//! exposes), with the binary path pointed at the binary this build made.

mod common;

use std::path::Path;
use std::process::Command;

const UNITS: [&str; 3] = ["hale-agent", "hale-collector", "hale-healer"];

/// The units as shipped, but running this build's `hale`, in `dir`.
fn units_in(dir: &Path) -> Vec<std::path::PathBuf> {
    let hale = env!("CARGO_BIN_EXE_hale");
    UNITS
        .iter()
        .map(|unit| {
            let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("deploy/systemd/{unit}.service"));
            let text = std::fs::read_to_string(&shipped).expect("unit");
            assert!(text.contains("ExecStart=/usr/local/bin/hale"), "{unit}: installed as README says");
            let text =
                text.replace("/usr/local/bin/hale-agent", hale).replace("/usr/local/bin/hale ", &format!("{hale} "));
            common::file(dir, &format!("{unit}.service"), &text)
        })
        .collect()
}

#[test]
fn the_systemd_units_verify_and_expose_little() {
    let analyze = common::need("systemd-analyze");
    let dir = tempfile::tempdir().expect("tmp");
    let units = units_in(dir.path());
    let out = Command::new(&analyze).args(["verify", "--man=no"]).args(&units).output().expect("verify");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
    for unit in &units {
        let out = Command::new(&analyze).args(["security", "--offline=yes"]).arg(unit).output().expect("security");
        let text = String::from_utf8_lossy(&out.stdout);
        let level: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in: {text}{}", String::from_utf8_lossy(&out.stderr)));
        assert!(level <= 2.5, "{}: exposure {level} (hardening lost?)\n{text}", unit.display());
    }
}
