//! `scripts/reap.py`, the wrapper `scripts/test.sh` runs the suite under: whatever the
//! command leaves running is listed and stopped (so nothing holds CI's output open), the
//! command's exit status is kept, and a command past `REAP_TIMEOUT` is stopped.

use std::path::Path;
use std::process::Command;

fn reap() -> Command {
    let mut c = Command::new("python3");
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reap.py"));
    c
}

fn alive(pid: i32) -> bool {
    // A zombie is not alive: it has been stopped, only not yet waited for by its parent.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").split_whitespace().next();
            state != Some("Z")
        })
        .unwrap_or(false)
}

#[test]
fn a_process_left_running_is_listed_and_stopped_and_the_status_kept() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    // A daemon: detached into its own session, its parent gone, its output ours.
    let out = reap()
        .args([
            "bash",
            "-c",
            &format!(
                "setsid bash -c 'echo $$ > {}; exec sleep 1000' & sleep 0.2; exit 3",
                pidfile.display()
            ),
        ])
        .output()
        .expect("python3 runs reap.py");
    assert_eq!(out.status.code(), Some(3), "the command's own status");
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .expect("the daemon wrote its pid")
        .trim()
        .parse()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("outlived the command") && err.contains(&format!("{pid} sleep 1000")),
        "{err}"
    );
    assert!(!alive(pid), "the leftover process {pid} was stopped");
}

#[test]
fn a_command_past_its_time_is_stopped_with_status_124() {
    let out = reap()
        .env("REAP_TIMEOUT", "0.5")
        .args(["bash", "-c", "sleep 1000; exit 0"])
        .output()
        .expect("python3 runs reap.py");
    assert_eq!(out.status.code(), Some(124));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("REAP_TIMEOUT") && err.contains("sleep 1000"),
        "{err}"
    );
}
