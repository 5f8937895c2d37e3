//! The fixture helper under contention: many threads and a second process ask for one fixture at once; the
//! script runs once per change of its inputs and nobody sees a half-made folder.
use std::path::Path;
use std::process::Command;

use crate::support::{fixture, scratch};

/// Asks for the stress fixture of `nonce`; checks the folder is whole.
fn probe(runs: &Path, nonce: &str) {
    let dir = fixture("stress_probe.py", "stress-probe", &[runs.to_str().unwrap(), nonce]);
    for file in ["first", "last"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(text, nonce, "{file} of the fixture for {nonce}");
    }
}

/// When the parent test sets it, this test is the second process: it asks for the fixture too.
const CHILD: &str = "ROBUSTVIT_FIXTURE_STRESS_CHILD";

#[test]
fn fixture_is_made_once_however_many_threads_and_processes_ask() {
    if let Ok(spec) = std::env::var(CHILD) {
        let (runs, nonce) = spec.split_once('\t').unwrap();
        // Tell the parent to start its threads now, so that both processes ask within milliseconds.
        std::fs::write(format!("{runs}.{nonce}.ready"), "").unwrap();
        return probe(Path::new(runs), nonce);
    }
    let dir = scratch("fixture-stress");
    let runs = dir.join("runs");
    for nonce in ["first-inputs", "changed-inputs"] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "fixtures::fixture_is_made_once_however_many_threads_and_processes_ask", "--quiet"])
            .env(CHILD, format!("{}\t{nonce}", runs.display()))
            .spawn()
            .unwrap();
        let ready = dir.join(format!("runs.{nonce}.ready"));
        while !ready.exists() {
            assert!(child.try_wait().unwrap().is_none(), "the second process ended before asking for {nonce}");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| probe(&runs, nonce));
            }
        });
        assert!(child.wait_with_output().unwrap().status.success(), "the second process failed for {nonce}");
    }
    let log = std::fs::read_to_string(&runs).unwrap();
    assert_eq!(log.lines().collect::<Vec<_>>(), ["first-inputs", "changed-inputs"], "the script ran {log:?}");
}
