//! The import graph between the files of `src/` (docs/architecture.md):
//! no import circle, and no more than two imports from a lower layer to a
//! higher one. Checked by `scripts/import-graph.py`, over the `use` lines;
//! and the script itself is shown to catch a circle and an upward import.

use std::path::Path;
use std::process::Command;

fn graph(args: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/import-graph.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs the import-graph check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn src_has_no_import_circle_and_at_most_two_upward_imports() {
    let (ok, report) = graph(&[]);
    assert!(ok, "{report}");
    assert!(report.contains(" 0 circles"), "{report}");
}

#[test]
fn the_check_catches_a_circle_and_imports_that_run_up() {
    let dir = std::env::temp_dir().join(format!("percache-graph-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    std::fs::write(
        dir.join("lib.rs"),
        "pub mod cache;\npub mod routes;\npub mod clock;\n",
    )
    .unwrap();
    std::fs::write(dir.join("cache/mod.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(dir.join("cache/a.rs"), "use super::b::B;\npub struct A;\n").unwrap();
    std::fs::write(dir.join("cache/b.rs"), "use super::a::A;\npub struct B;\n").unwrap();
    std::fs::write(dir.join("routes.rs"), "use crate::cache::a::A;\n").unwrap();
    std::fs::write(
        dir.join("clock.rs"),
        "use crate::routes::X;\nuse crate::cache::a::A;\nuse crate::cache::b::B;\n",
    )
    .unwrap();
    let (ok, report) = graph(&["--src", dir.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!ok, "{report}");
    assert!(report.contains("circle: cache/a <-> cache/b"), "{report}");
    assert!(report.contains("upward: clock -> routes"), "{report}");
    assert!(report.contains("3 upward"), "{report}");
}
