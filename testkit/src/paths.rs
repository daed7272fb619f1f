//! Repository paths and addresses as the container checks compare them.

use std::path::{Component, Path, PathBuf};

/// `./src/` -> `src`, `.` -> ``.
pub fn norm(path: &str) -> String {
    let p = path.trim();
    let p = p.strip_prefix("./").unwrap_or(p).trim_end_matches('/');
    if p == "." { "" } else { p }.to_string()
}

/// Whether `path` (relative to the repository) is `source` or lies under it.
pub fn is_under(path: &str, source: &str) -> bool {
    let (path, source) = (norm(path), norm(source));
    source.is_empty() || path == source || path.starts_with(&format!("{source}/"))
}

/// Every file under `dir` (recursively).
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    let paths = entries.map(|e| e.path());
    paths
        .flat_map(|p| if p.is_dir() { files(&p) } else { vec![p] })
        .collect()
}

/// Resolves `..` and `.` without touching the file system.
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => drop(out.pop()),
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// (host, port) of `host:port`, `scheme://host:port/path` or `[::]:port`.
fn authority(addr: &str) -> (&str, Option<&str>) {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let auth = rest.split('/').next().unwrap_or_default();
    auth.rsplit_once(':').map_or((auth, None), |(h, p)| (h, Some(p)))
}

/// The host of an address or URL.
pub fn host_of(addr: &str) -> &str {
    authority(addr).0
}

/// The port of an address or URL; fails the test if it has none.
pub fn port_of(addr: &str) -> u16 {
    let port = authority(addr).1.unwrap_or_else(|| panic!("no port in {addr:?}"));
    port.parse()
        .unwrap_or_else(|_| panic!("bad port {port:?} in {addr:?}"))
}
