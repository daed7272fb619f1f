//! The container files (`Dockerfile`, `compose.yaml`, `.dockerignore`) checked
//! against the repository, as text: no Docker daemon is needed. They cannot
//! drift from the code unnoticed: COPY sources, binary names, ports, the health
//! route, the env var names and the non-root user are all checked here.
//!
//! The workspace (members, packages, targets) comes from `cargo metadata`, the
//! server's env names and defaults from its clap command (`Settings::command()`),
//! `compose.yaml` from `serde_norway`. The mock's clap struct is private to its
//! binary, so its env names are read from `mock_upstream/src/main.rs` as text.
//! The Dockerfile has a small parser of its own, which fails loudly on any
//! instruction it does not know.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use cargo_metadata::{MetadataCommand, TargetKind};
use clap::CommandFactory;
use percache::config::Settings;
use serde_norway::Value;

// ---------------------------------------------------------------- files and addresses

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// `./src/` -> `src`, `.` -> ``.
fn norm(path: &str) -> String {
    let p = path.trim();
    let p = p.strip_prefix("./").unwrap_or(p).trim_end_matches('/');
    if p == "." { "" } else { p }.to_string()
}

/// Whether `path` (relative to the repository) is `source` or lies under it.
fn is_under(path: &str, source: &str) -> bool {
    let (path, source) = (norm(path), norm(source));
    source.is_empty() || path == source || path.starts_with(&format!("{source}/"))
}

/// Every file under `dir` (recursively).
fn files(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir).into_iter().flatten().flatten();
    let paths = entries.map(|e| e.path());
    paths
        .flat_map(|p| if p.is_dir() { files(&p) } else { vec![p] })
        .collect()
}

/// Resolves `..` and `.` without touching the file system.
fn lexical(path: &Path) -> PathBuf {
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

fn unquote(s: &str) -> String {
    let s = s.trim();
    let quoted = s.len() >= 2 && ["\"", "'"].iter().any(|q| s.starts_with(q) && s.ends_with(q));
    let n = usize::from(quoted);
    s[n..s.len() - n].to_string()
}

/// (host, port) of `host:port`, `scheme://host:port/path` or `[::]:port`.
fn authority(addr: &str) -> (&str, Option<&str>) {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let auth = rest.split('/').next().unwrap_or_default();
    auth.rsplit_once(':').map_or((auth, None), |(h, p)| (h, Some(p)))
}

fn host_of(addr: &str) -> &str {
    authority(addr).0
}

fn port_of(addr: &str) -> u16 {
    let port = authority(addr).1.unwrap_or_else(|| panic!("no port in {addr:?}"));
    port.parse()
        .unwrap_or_else(|_| panic!("bad port {port:?} in {addr:?}"))
}

// ---------------------------------------------------------------- Dockerfile

/// The instructions the checks understand; any other fails the parse.
const KEYWORDS: &str = "ARG FROM WORKDIR COPY ADD RUN ENV USER EXPOSE HEALTHCHECK ENTRYPOINT";

#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
    line: usize,
}

#[derive(Debug)]
struct Stage {
    name: String,
    base: String,
    instructions: Vec<Instruction>,
}

/// A COPY or ADD: `from` is the stage of `--from=`, `None` for the build context.
struct Copy {
    from: Option<String>,
    sources: Vec<String>,
    dest: String,
}

impl Stage {
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a Instruction> + 'a {
        self.instructions.iter().filter(move |i| i.keyword == keyword)
    }

    /// The arguments of the last `keyword` instruction.
    fn last(&self, keyword: &str) -> Option<&str> {
        let mut all = self.instructions.iter().rev();
        all.find(|i| i.keyword == keyword).map(|i| i.args.as_str())
    }

    /// Whether a RUN instruction contains all of `needles`.
    fn runs(&self, needles: &[&str]) -> bool {
        self.all("RUN")
            .any(|r| needles.iter().all(|n| r.args.contains(n)))
    }

    fn workdir(&self) -> String {
        self.last("WORKDIR").unwrap_or("/").to_string()
    }

    fn copies(&self) -> Vec<Copy> {
        let copies = self
            .instructions
            .iter()
            .filter(|i| ["COPY", "ADD"].contains(&&*i.keyword));
        let copy = |i: &Instruction| {
            let (flags, mut rest): (Vec<_>, Vec<_>) =
                words(&i.args).into_iter().partition(|w| w.starts_with("--"));
            let dest = rest.pop().filter(|_| !rest.is_empty());
            let dest = dest.unwrap_or_else(|| {
                panic!(
                    "Dockerfile line {}: {} needs a source and a destination",
                    i.line, i.keyword
                )
            });
            let from = flags.iter().find(|f| f.starts_with("--from"));
            let from = from.map(|f| f.trim_start_matches("--from=").to_string());
            Copy {
                from,
                sources: rest,
                dest,
            }
        };
        copies.map(copy).collect()
    }

    /// COPY instructions whose sources come from the build context (the repository).
    fn context_copies(&self) -> Vec<Copy> {
        self.copies().into_iter().filter(|c| c.from.is_none()).collect()
    }

    /// The environment set by ENV, in order.
    fn env(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for i in self.all("ENV") {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            if words.first().is_some_and(|w| !w.contains('=')) {
                out.push((words[0].to_string(), words[1..].join(" "))); // legacy `ENV KEY value`
                continue;
            }
            for w in words {
                let (k, v) = w
                    .split_once('=')
                    .unwrap_or_else(|| panic!("Dockerfile line {}: ENV {w:?}", i.line));
                out.push((k.to_string(), unquote(v)));
            }
        }
        out
    }
}

/// Exec form (`["a", "b"]`) or whitespace-separated words.
fn words(args: &str) -> Vec<String> {
    match args.trim().strip_prefix('[') {
        Some(list) => list
            .trim_end_matches(']')
            .split(',')
            .map(unquote)
            .filter(|w| !w.is_empty())
            .collect(),
        None => args.split_whitespace().map(str::to_string).collect(),
    }
}

/// The stages of the Dockerfile, with line continuations joined and comments dropped.
fn dockerfile() -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, raw) in read("Dockerfile").lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue; // also inside continuations, as Docker does
        }
        let (start, mut buf) = current.take().unwrap_or((n + 1, String::new()));
        buf.push_str(line.trim_end_matches('\\'));
        if line.ends_with('\\') {
            current = Some((start, buf + " "));
            continue;
        }
        let (kw, args) = buf.split_once(char::is_whitespace).unwrap_or((&buf, ""));
        let (keyword, args) = (kw.to_ascii_uppercase(), args.trim().to_string());
        assert!(
            KEYWORDS.split(' ').any(|k| k == keyword),
            "Dockerfile line {start}: unknown {kw}"
        );
        if keyword == "FROM" {
            let w: Vec<&str> = args.split_whitespace().filter(|w| !w.starts_with("--")).collect();
            let name = match w.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => stages.len().to_string(),
            };
            let base = w.first().unwrap_or(&"").to_string();
            stages.push(Stage {
                name,
                base,
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(Instruction {
                keyword,
                args,
                line: start,
            });
        } else {
            assert_eq!(
                keyword, "ARG",
                "Dockerfile line {start}: only ARG may come before the first FROM"
            );
        }
    }
    assert!(current.is_none(), "Dockerfile ends inside a line continuation");
    assert!(
        stages.len() >= 2,
        "the Dockerfile should be multi-stage (a builder and a runtime)"
    );
    stages
}

/// The stage that runs `cargo build`, and the arguments of that RUN.
fn builder<'a>(stages: &'a [Stage]) -> (&'a Stage, &'a str) {
    let is_build = |i: &&Instruction| i.keyword == "RUN" && i.args.contains("cargo build");
    let run = |s: &'a Stage| Some((s, s.instructions.iter().find(is_build)?.args.as_str()));
    stages
        .iter()
        .find_map(run)
        .expect("no Dockerfile stage runs `cargo build`")
}

/// The last stage: what `docker build` produces.
fn runtime(stages: &[Stage]) -> &Stage {
    stages.last().unwrap()
}

/// Binaries the runtime stage copies from the builder: (source path, file name).
fn shipped_binaries(stages: &[Stage]) -> Vec<(String, String)> {
    let b = Some(&builder(stages).0.name);
    let copies = runtime(stages)
        .copies()
        .into_iter()
        .filter(|c| c.from.as_ref() == b);
    let name = |s: &String| s.rsplit('/').next().unwrap().to_string();
    copies
        .flat_map(|c| c.sources)
        .map(|s| (s.clone(), name(&s)))
        .collect()
}

/// Where a context COPY puts `source`, relative to `workdir` (`None` if outside it).
fn landed_at(source: &str, copy: &Copy, workdir: &str) -> Option<String> {
    let into_dir = copy.dest.ends_with('/') || copy.dest == "." || copy.sources.len() > 1;
    let dest = match copy.dest.starts_with('/') {
        true => Path::new(&copy.dest).strip_prefix(workdir).ok()?.to_path_buf(),
        false => PathBuf::from(norm(&copy.dest)),
    };
    let src = norm(source);
    let name = src.rsplit('/').next().unwrap();
    let at = if root().join(&src).is_dir() || !into_dir {
        dest
    } else {
        dest.join(name)
    };
    Some(at.to_string_lossy().into_owned())
}

// ---------------------------------------------------------------- workspace and settings

#[derive(Debug)]
struct Member {
    /// Relative to the repository: `` for the root package.
    dir: String,
    package: String,
    bins: Vec<String>,
    /// Files cargo must find to load the manifest: itself, its declared targets
    /// (`[lib]`, `[[bin]]`, `[[bench]]`, ...; not auto-discovered ones) and its build script.
    required: Vec<String>,
}

fn members() -> Vec<Member> {
    let meta = MetadataCommand::new()
        .manifest_path(root().join("Cargo.toml"))
        .no_deps()
        .exec();
    let meta = meta.expect("`cargo metadata` cannot load the workspace");
    let rel = |p: &Path| {
        p.strip_prefix(&meta.workspace_root)
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let member = |p: &cargo_metadata::Package| {
        let manifest: toml::Table = fs::read_to_string(&p.manifest_path).unwrap().parse().unwrap();
        let declared = |t: &cargo_metadata::Target| {
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

fn member(dir: &str) -> Member {
    members()
        .into_iter()
        .find(|m| m.dir == dir)
        .unwrap_or_else(|| panic!("no workspace member `{dir}`"))
}

/// (env name, default value) of every flag of the server that has an env twin.
fn server_env() -> Vec<(String, Option<String>)> {
    let cmd = Settings::command();
    let env = |a: &clap::Arg| {
        let default = a
            .get_default_values()
            .first()
            .map(|d| d.to_string_lossy().into_owned());
        Some((a.get_env()?.to_string_lossy().into_owned(), default))
    };
    cmd.get_arguments().filter_map(env).collect()
}

fn default_bind_port() -> u16 {
    let bind = server_env().into_iter().find(|(e, _)| e == "PERCACHE_BIND");
    let bind = bind.expect("no flag of percache::config::Settings reads PERCACHE_BIND");
    port_of(&bind.1.expect("PERCACHE_BIND has no default value"))
}

/// The `env = "..."` names in the mock's source (its clap struct is private to its binary).
fn mock_env_names() -> BTreeSet<String> {
    let text = read("mock_upstream/src/main.rs");
    text.split("env = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- compose.yaml

/// The `services:` mapping of compose.yaml.
fn compose_services() -> serde_norway::Mapping {
    let doc: Value = serde_norway::from_str(&read("compose.yaml")).expect("compose.yaml is not YAML");
    let services = doc
        .get("services")
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    assert!(!services.is_empty(), "compose.yaml has no `services:` mapping");
    services
}

fn service(name: &str) -> Value {
    let svc = compose_services().get(name).cloned();
    svc.unwrap_or_else(|| panic!("compose.yaml has no `{name}` service"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("compose.yaml: expected a scalar, got {other:?}"),
    }
}

/// A sequence, or a string split at whitespace (as compose does for `command:`);
/// the keys of a mapping (`depends_on:` takes both).
fn list(v: &Value, key: &str) -> Vec<String> {
    match v.get(key) {
        Some(Value::Sequence(items)) => items.iter().map(text).collect(),
        Some(Value::Mapping(m)) => m.keys().map(text).collect(),
        Some(other) => text(other).split_whitespace().map(str::to_string).collect(),
        None => Vec::new(),
    }
}

/// `environment:` as a mapping or as a list of `KEY=value`.
fn environment(svc: &Value) -> Vec<(String, String)> {
    if let Some(Value::Mapping(m)) = svc.get("environment") {
        return m.iter().map(|(k, v)| (text(k), text(v))).collect();
    }
    let split = |kv: &String| {
        kv.split_once('=')
            .map_or((kv.clone(), String::new()), |(k, v)| (k.into(), v.into()))
    };
    list(svc, "environment").iter().map(split).collect()
}

fn env_value(svc: &Value, key: &str) -> Option<String> {
    environment(svc)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The address the mock is told to listen on: `--bind` in its command, else `MOCK_BIND`.
fn mock_bind(mock: &Value) -> String {
    let command = list(mock, "command");
    let flag = command
        .iter()
        .position(|w| w == "--bind")
        .and_then(|i| command.get(i + 1).cloned());
    let flag = flag.or_else(|| {
        command
            .iter()
            .find_map(|w| Some(w.strip_prefix("--bind=")?.to_string()))
    });
    let bind = flag.or_else(|| env_value(mock, "MOCK_BIND"));
    bind.expect("the compose `mock` service sets no --bind (nor MOCK_BIND): it would listen on loopback only")
}

// ================================================================ checks

#[test]
fn every_copy_source_exists_in_the_repository_and_is_not_dockerignored() {
    let ignore: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .map(|l| norm(l.trim_start_matches('/').trim_start_matches("**/")))
        .collect();
    let mut seen = 0;
    for stage in dockerfile() {
        for source in stage.context_copies().into_iter().flat_map(|c| c.sources) {
            seen += 1;
            let (rel, at) = (
                norm(&source),
                format!("Dockerfile stage {}: COPY source `{source}`", stage.name),
            );
            assert!(
                !rel.contains(['*', '?', '[']),
                "{at}: wildcards are not checked by this test"
            );
            let path = root().join(&rel);
            assert!(path.exists(), "{at} does not exist in the repository");
            assert!(
                !path.is_dir() || !files(&path).is_empty(),
                "{at} is an empty directory (absent from a git checkout)"
            );
            for pattern in &ignore {
                assert!(
                    !is_under(&rel, pattern),
                    "{at} is excluded by `{pattern}` in .dockerignore"
                );
            }
        }
    }
    assert!(seen >= 4, "found only {seen} COPY sources in the Dockerfile");
}

#[test]
fn the_builder_copies_everything_cargo_needs_in_the_repository_layout() {
    let stages = dockerfile();
    let b = builder(&stages).0;
    let workdir = b.workdir();
    assert_ne!(workdir, "/", "the builder stage should set a WORKDIR");

    // Where each context COPY lands must mirror where it is in the repository.
    let mut copied = Vec::new();
    for copy in b.context_copies() {
        for source in &copy.sources {
            assert_eq!(
                landed_at(source, &copy, &workdir).as_deref(),
                Some(norm(source).as_str()),
                "builder COPY {source} -> {} (WORKDIR {workdir}) does not keep the repository layout cargo expects",
                copy.dest
            );
            copied.push(norm(source));
        }
    }
    let covered = |path: &str| copied.iter().any(|c| is_under(path, c));

    let required = members().into_iter().flat_map(|m| m.required);
    for path in std::iter::once("Cargo.lock".to_string()).chain(required) {
        assert!(
            root().join(&path).exists(),
            "cargo needs `{path}` (declared in a manifest) but it is not in the repository"
        );
        assert!(
            covered(&path),
            "cargo needs `{path}` to load the workspace, but the builder stage does not COPY it \
             (a [[bench]]/[[test]] declared in Cargo.toml must be copied, e.g. `COPY benches/ benches/`)"
        );
    }

    // Files embedded at compile time (include_bytes!/include_str!) must be copied too.
    let sources = members()
        .into_iter()
        .flat_map(|m| files(&root().join(&m.dir).join("src")));
    let sources = sources.filter(|p| p.extension().is_some_and(|e| e == "rs"));
    let mut embedded = 0;
    for file in sources {
        let text = fs::read_to_string(&file).unwrap();
        let literals = ["include_bytes!(\"", "include_str!(\""]
            .into_iter()
            .flat_map(|m| text.split(m).skip(1));
        for lit in literals.map(|rest| rest.split('"').next().unwrap()) {
            let target = lexical(&file.parent().unwrap().join(lit));
            let outside = || panic!("{} embeds {lit}, outside the repository", file.display());
            let rel = target
                .strip_prefix(root())
                .unwrap_or_else(|_| outside())
                .to_string_lossy();
            embedded += 1;
            assert!(
                covered(&rel),
                "{} embeds `{rel}` at compile time, but the builder stage does not COPY it",
                file.display()
            );
        }
    }
    assert!(
        embedded > 0,
        "no include_bytes! found: the asset check is not looking in the right place"
    );
}

#[test]
fn the_builder_runs_a_locked_release_build_of_the_shipped_binaries() {
    let stages = dockerfile();
    let (b, rt) = (builder(&stages).0, runtime(&stages));
    assert!(
        b.base.starts_with("rust:") && b.base.ends_with("-bookworm"),
        "the builder should be a rust:*-bookworm image (same glibc as the runtime), got {}",
        b.base
    );
    assert!(
        rt.base.starts_with("debian:bookworm"),
        "the runtime should be debian:bookworm(-slim) to match the builder's glibc, got {}",
        rt.base
    );
    let run = builder(&stages).1;
    for flag in ["--release", "--locked"] {
        assert!(run.contains(flag), "`cargo build` should use {flag}: {run}");
    }
    let shipped = shipped_binaries(&stages);
    assert!(
        !shipped.is_empty(),
        "the runtime stage copies no binary from the builder"
    );
    for (path, bin) in &shipped {
        let owner = members().into_iter().find(|m| m.bins.contains(bin));
        let owner = owner
            .unwrap_or_else(|| panic!("the runtime copies `{bin}`, which is no [[bin]] of the workspace"));
        let package = &owner.package;
        assert!(
            run.contains(&format!("-p {package}"))
                || run.contains(&format!("--package {package}"))
                || run.contains("--workspace"),
            "`{bin}` is a binary of package `{package}`, which `cargo build` does not build: {run}"
        );
        assert!(
            run.contains(&format!("target/release/{bin}")),
            "the builder does not take `{bin}` from target/release: {run}"
        );
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        assert!(
            run.contains(dir),
            "the runtime copies {path} but the builder does not install into {dir}: {run}"
        );
    }
}

#[test]
fn binary_names_match_the_cargo_bin_targets() {
    let stages = dockerfile();
    let shipped: BTreeSet<String> = shipped_binaries(&stages).into_iter().map(|(_, b)| b).collect();
    let (server, mock) = (member(""), member("mock_upstream"));
    assert_eq!(server.package, "percache");
    assert!(
        server.bins.contains(&"percache".into()),
        "Cargo.toml has no [[bin]] `percache`: {:?}",
        server.bins
    );

    // The image's ENTRYPOINT: the server, in exec form so SIGTERM reaches it.
    let entry = runtime(&stages)
        .last("ENTRYPOINT")
        .expect("the runtime stage has no ENTRYPOINT");
    assert!(
        entry.starts_with('['),
        "ENTRYPOINT should use the exec form [\"...\"] so that SIGTERM reaches the server: {entry}"
    );
    let program = words(entry).remove(0);
    let program = program.rsplit('/').next().unwrap();
    assert!(
        server.bins.iter().any(|b| b == program),
        "ENTRYPOINT runs `{program}`, not a [[bin]] of Cargo.toml ({:?})",
        server.bins
    );
    assert!(
        shipped.contains(program),
        "ENTRYPOINT runs `{program}` but the runtime stage does not copy it ({shipped:?})"
    );

    // compose runs the mock from the same image.
    let mock_svc = service("mock");
    let mock_entry = list(&mock_svc, "entrypoint");
    let mock_program = mock_entry
        .first()
        .expect("the compose `mock` service has no entrypoint");
    let mock_program = mock_program.rsplit('/').next().unwrap().to_string();
    assert!(
        mock.bins.contains(&mock_program),
        "compose `mock` runs `{mock_program}`, not a [[bin]] of mock_upstream/Cargo.toml ({:?})",
        mock.bins
    );
    assert!(
        shipped.contains(&mock_program),
        "compose `mock` runs `{mock_program}` but the image does not contain it ({shipped:?})"
    );
    assert_eq!(
        mock_svc.get("build"),
        service("percache").get("build"),
        "the `mock` service should be built from the same Dockerfile as `percache`"
    );
}

#[test]
fn the_runtime_image_carries_the_assets_beside_the_binary() {
    let stages = dockerfile();
    let rt = runtime(&stages);
    let workdir = rt.workdir();
    let carried = rt.context_copies().iter().any(|copy| {
        copy.sources.iter().any(|s| norm(s) == "assets")
            && landed_at("assets", copy, &workdir).as_deref() == Some("assets")
    });
    assert!(
        carried,
        "the runtime stage should COPY assets/ to {workdir}/assets (WORKDIR {workdir})"
    );
}

#[test]
fn ports_agree_with_the_default_bind() {
    let port = default_bind_port();
    assert_eq!(
        port, 8080,
        "percache::config::Settings: default bind port changed?"
    );
    let stages = dockerfile();
    let rt = runtime(&stages);

    let exposed: Vec<u16> = rt
        .all("EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .unwrap_or_else(|_| panic!("EXPOSE {p}"))
        })
        .collect();
    assert_eq!(
        exposed,
        vec![port],
        "EXPOSE should be the port of the server's default bind (Settings)"
    );

    let bind = rt
        .env()
        .into_iter()
        .rev()
        .find(|(k, _)| k == "PERCACHE_BIND")
        .map(|(_, v)| v);
    let bind =
        bind.expect("the runtime stage should set ENV PERCACHE_BIND (the default listens on loopback only)");
    assert_eq!(
        port_of(&bind),
        port,
        "ENV PERCACHE_BIND={bind} should use the EXPOSEd port {port}"
    );
    let host = host_of(&bind);
    assert!(
        host == "0.0.0.0" || host == "[::]",
        "ENV PERCACHE_BIND={bind} should listen on all interfaces inside the container"
    );

    let published = list(&service("percache"), "ports");
    assert!(
        published.iter().any(|p| p
            .rsplit(':')
            .next()
            .is_some_and(|c| c.trim_end_matches("/tcp") == port.to_string())),
        "compose `percache` should publish container port {port}: {published:?}"
    );
}

#[test]
fn the_healthcheck_probes_a_route_of_the_server() {
    let stages = dockerfile();
    let rt = runtime(&stages);
    let check = rt
        .last("HEALTHCHECK")
        .expect("the runtime stage has no HEALTHCHECK");
    let url = check
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no http:// URL in HEALTHCHECK {check}"));
    let host = host_of(url);
    assert!(
        host == "127.0.0.1" || host == "localhost",
        "HEALTHCHECK should probe the container itself, not {host}"
    );
    assert_eq!(
        port_of(url),
        default_bind_port(),
        "HEALTHCHECK {url} should probe the server's port"
    );
    let path = format!("/{}", url.split_once("://").unwrap().1.split_once('/').unwrap().1);
    assert!(
        read("src/routes/health.rs").contains(&format!("#[get(\"{path}\")]")),
        "HEALTHCHECK probes {path}, which src/routes/health.rs does not serve"
    );
    let tool = words(check.split(" CMD ").nth(1).unwrap_or_default())
        .into_iter()
        .next()
        .unwrap_or_default();
    if tool == "curl" || tool == "wget" {
        assert!(
            rt.runs(&["install", &tool]),
            "HEALTHCHECK uses {tool}, which the runtime stage does not install"
        );
    }
}

#[test]
fn the_runtime_stage_runs_as_a_non_root_user() {
    let stages = dockerfile();
    let rt = runtime(&stages);
    let user = rt
        .last("USER")
        .expect("the runtime stage sets no USER: it would run as root");
    let name = user.split(':').next().unwrap().trim();
    assert!(
        !name.is_empty() && name != "root" && name != "0",
        "the runtime stage should run as a non-root user, not USER {user}"
    );
    if let Ok(uid) = name.parse::<u32>() {
        assert!(uid > 0, "USER {user} is root");
    } else {
        assert!(
            rt.runs(&["useradd", name]),
            "USER {name} is never created (useradd) in the runtime stage"
        );
    }
}

#[test]
fn compose_wires_the_server_to_redis_and_the_mock() {
    let names: BTreeSet<String> = compose_services().keys().map(text).collect();
    for s in ["redis", "mock", "percache"] {
        assert!(names.contains(s), "compose.yaml has no `{s}` service: {names:?}");
    }
    let (redis, mock, server) = (service("redis"), service("mock"), service("percache"));

    let image = redis.get("image").and_then(Value::as_str);
    assert!(
        image.is_some_and(|i| i.starts_with("redis:")),
        "compose `redis` should run a redis image"
    );
    assert!(
        server.get("build").is_some(),
        "compose `percache` should build the Dockerfile (`build: .`)"
    );

    // The mock listens where the server is told to find it.
    let bind = mock_bind(&mock);
    assert_eq!(
        host_of(&bind),
        "0.0.0.0",
        "the mock should listen on all interfaces to be reachable from `percache`: {bind}"
    );
    let upstream = env_value(&server, "UPSTREAM_URL").expect("compose `percache` sets no UPSTREAM_URL");
    assert_eq!(
        host_of(&upstream),
        "mock",
        "UPSTREAM_URL={upstream} should name the `mock` service"
    );
    assert_eq!(
        port_of(&upstream),
        port_of(&bind),
        "UPSTREAM_URL={upstream} should use the port the mock binds ({bind})"
    );

    // The image's HEALTHCHECK probes the server's port: the mock needs its own.
    let probe = list(mock.get("healthcheck").unwrap_or(&Value::Null), "test");
    let probe_url = probe
        .iter()
        .find(|w| w.starts_with("http://"))
        .expect("compose `mock` should override the image HEALTHCHECK (it probes the server's port)");
    assert_eq!(
        port_of(probe_url),
        port_of(&bind),
        "the mock's healthcheck {probe_url} should probe the mock's port"
    );
    let mock_path = probe_url
        .split_once("://")
        .unwrap()
        .1
        .split_once('/')
        .map(|(_, p)| p);
    assert!(
        mock_path.is_some_and(|p| read("mock_upstream/src/server.rs").contains(&format!("\"/{p}\""))),
        "the mock's healthcheck {probe_url} is not a route of mock_upstream/src/server.rs"
    );

    let redis_url = env_value(&server, "REDIS_URL").expect("compose `percache` sets no REDIS_URL");
    assert!(
        redis_url.starts_with("redis://") && host_of(&redis_url) == "redis",
        "REDIS_URL={redis_url} should point at the `redis` service"
    );

    let key = env_value(&server, "SESSION_KEY").expect("compose `percache` sets no SESSION_KEY");
    assert!(
        key.starts_with("${SESSION_KEY:?") && key.ends_with('}'),
        "SESSION_KEY should come from the host environment and be required (${{SESSION_KEY:?...}}), \
         not be written in compose.yaml: {key}"
    );

    let deps = list(&server, "depends_on");
    for s in ["redis", "mock"] {
        assert!(
            deps.iter().any(|d| d == s),
            "compose `percache` should depend on `{s}`: {deps:?}"
        );
    }
}

#[test]
fn env_var_names_are_settings_of_the_binaries() {
    let server_env: BTreeSet<String> = server_env().into_iter().map(|(e, _)| e).collect();
    let mock_env = mock_env_names();
    let mut used = BTreeSet::new();
    for k in runtime(&dockerfile()).env().into_iter().map(|(k, _)| k) {
        assert!(
            server_env.contains(&k),
            "the Dockerfile sets ENV {k}, which no flag of Settings reads"
        );
        used.insert(k);
    }
    for (k, _) in environment(&service("percache")) {
        assert!(
            server_env.contains(&k),
            "compose `percache` sets {k}, which no flag of Settings reads"
        );
        used.insert(k);
    }
    for (k, _) in environment(&service("mock")) {
        assert!(
            mock_env.contains(&k),
            "compose `mock` sets {k}, which is no `env = \"{k}\"` in mock_upstream/src/main.rs"
        );
    }
    for k in [
        "PERCACHE_BIND",
        "REDIS_URL",
        "UPSTREAM_URL",
        "SESSION_KEY",
        "LOG_FORMAT",
    ] {
        assert!(
            used.contains(k),
            "{k} is not set by the Dockerfile or compose.yaml (found {used:?})"
        );
    }
}
