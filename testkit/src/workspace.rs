//! A cargo workspace's members from `cargo metadata`, with the files cargo
//! needs to load each manifest (what a Docker build context must hold),
//! the files its sources embed, and the env twins of a clap command's flags.

use std::path::{Path, PathBuf};

use cargo_metadata::{MetadataCommand, Package, Target, TargetKind};

use crate::paths::{files, lexical};

/// One workspace member.
#[derive(Debug)]
pub struct Member {
    /// Relative to the workspace root: `` for the root package.
    pub dir: String,
    pub package: String,
    pub bins: Vec<String>,
    /// Files cargo must find to load the manifest: itself, its declared targets
    /// (`[lib]`, `[[bin]]`, `[[bench]]`, ...; not auto-discovered ones) and its build script.
    pub required: Vec<String>,
}

/// The members of the workspace whose manifest is `<root>/Cargo.toml`.
pub fn members(root: &Path) -> Vec<Member> {
    let meta = MetadataCommand::new()
        .manifest_path(root.join("Cargo.toml"))
        .no_deps()
        .exec();
    let meta = meta.expect("`cargo metadata` cannot load the workspace");
    let rel = |p: &Path| {
        p.strip_prefix(&meta.workspace_root)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let member = |p: &Package| {
        let manifest = std::fs::read_to_string(&p.manifest_path).expect("reading a member's Cargo.toml");
        let manifest: toml::Table = manifest.parse().expect("a member's Cargo.toml is TOML");
        let declared = |t: &Target| {
            let key = match t.kind[0] {
                TargetKind::CustomBuild => return true,
                TargetKind::Bin | TargetKind::Bench | TargetKind::Test | TargetKind::Example => {
                    t.kind[0].to_string()
                }
                _ => return manifest.contains_key("lib"),
            };
            let mut tables = manifest
                .get(&key)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten();
            tables.any(|d| d.get("name").and_then(|n| n.as_str()) == Some(&t.name))
        };
        let targets = p
            .targets
            .iter()
            .filter(|t| declared(t))
            .map(|t| rel(t.src_path.as_std_path()));
        Member {
            dir: rel(p.manifest_path.parent().unwrap().as_std_path()),
            package: p.name.to_string(),
            bins: p
                .targets
                .iter()
                .filter(|t| t.is_bin())
                .map(|t| t.name.clone())
                .collect(),
            required: std::iter::once(rel(p.manifest_path.as_std_path()))
                .chain(targets)
                .collect(),
        }
    };
    meta.workspace_packages().into_iter().map(member).collect()
}

/// The files a member's sources embed at compile time (`include_bytes!`,
/// `include_str!`): (the source file, the embedded path relative to `root`).
/// Fails the test for a path outside `root`.
pub fn embedded_files(root: &Path, member: &Member) -> Vec<(PathBuf, String)> {
    let sources = files(&root.join(&member.dir).join("src"));
    let sources = sources
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rs"));
    let mut out = Vec::new();
    for file in sources {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let literals = ["include_bytes!(\"", "include_str!(\""]
            .into_iter()
            .flat_map(|m| text.split(m).skip(1));
        for lit in literals.map(|rest| rest.split('"').next().unwrap_or_default()) {
            let target = lexical(&file.parent().unwrap().join(lit));
            let rel = target
                .strip_prefix(root)
                .map(|r| r.to_string_lossy().into_owned());
            let rel =
                rel.unwrap_or_else(|_| panic!("{} embeds {lit}, outside the repository", file.display()));
            out.push((file.clone(), rel));
        }
    }
    out
}

/// Every `(env name, default value)` of a clap command's arguments that
/// have an environment variable twin.
pub fn clap_env(command: &clap::Command) -> Vec<(String, Option<String>)> {
    let env = |a: &clap::Arg| {
        let default = a
            .get_default_values()
            .first()
            .map(|d| d.to_string_lossy().into_owned());
        Some((a.get_env()?.to_string_lossy().into_owned(), default))
    };
    command.get_arguments().filter_map(env).collect()
}
