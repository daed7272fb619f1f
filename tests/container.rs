//! The container files (`Dockerfile`, `compose.yaml`, `.dockerignore`) checked
//! against the repository, as text: no Docker daemon is needed. They cannot
//! drift from the code unnoticed: COPY sources, binary names, ports, the health
//! route, the env var names and the non-root user are all checked here.
//!
//! The parsers are deliberately small: they understand the subset of Dockerfile,
//! YAML and TOML these files use, and fail loudly on what they do not.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

// ---------------------------------------------------------------- files

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// `./src/` -> `src`, `.` -> ``.
fn norm(path: &str) -> String {
    let p = path.trim();
    let p = p.strip_prefix("./").unwrap_or(p);
    let p = p.trim_end_matches('/');
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether `path` (relative to the repository) is `source` or lies under it.
fn is_under(path: &str, source: &str) -> bool {
    let (path, source) = (norm(path), norm(source));
    source.is_empty() || path == source || path.starts_with(&format!("{source}/"))
}

fn has_a_file(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let p = e.path();
            p.is_file() || (p.is_dir() && has_a_file(&p))
        })
    })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Resolves `..` and `.` without touching the file system.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Every `"..."` in `s`.
fn quoted(s: &str) -> Vec<String> {
    s.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// `["a", "b"]` -> [a, b].
fn flow_list(s: &str) -> Vec<String> {
    let inner = s.trim().trim_start_matches('[').trim_end_matches(']');
    inner.split(',').map(unquote).filter(|w| !w.is_empty()).collect()
}

/// The port of `host:port`, `scheme://host:port/path` or `[::]:port`.
fn port_of(addr: &str) -> u16 {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let port = authority
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
        .1;
    port.parse()
        .unwrap_or_else(|_| panic!("bad port {port:?} in {addr:?}"))
}

fn host_of(addr: &str) -> String {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    authority
        .rsplit_once(':')
        .map_or(authority, |(h, _)| h)
        .to_string()
}

// ---------------------------------------------------------------- Dockerfile

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

impl Stage {
    fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a Instruction> + 'a {
        self.instructions.iter().filter(move |i| i.keyword == keyword)
    }

    fn workdir(&self) -> String {
        self.all("WORKDIR")
            .last()
            .map_or_else(|| "/".to_string(), |i| i.args.trim().to_string())
    }

    /// (flags, sources, dest) of every COPY/ADD.
    fn copies(&self) -> Vec<(Vec<String>, Vec<String>, String)> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
            .map(|i| {
                let words = words(&i.args);
                let (flags, mut rest): (Vec<String>, Vec<String>) =
                    words.into_iter().partition(|w| w.starts_with("--"));
                assert!(
                    rest.len() >= 2,
                    "Dockerfile line {}: {} needs a source and a destination",
                    i.line,
                    i.keyword
                );
                let dest = rest.pop().unwrap();
                (flags, rest, dest)
            })
            .collect()
    }

    /// COPY instructions whose sources come from the build context (the repository).
    fn context_copies(&self) -> Vec<(Vec<String>, String)> {
        self.copies()
            .into_iter()
            .filter(|(flags, _, _)| !flags.iter().any(|f| f.starts_with("--from")))
            .map(|(_, sources, dest)| (sources, dest))
            .collect()
    }

    /// The environment set by ENV, in order.
    fn env(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for i in self.all("ENV") {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            if words.first().is_some_and(|w| !w.contains('=')) {
                // Legacy `ENV KEY value`.
                out.push((words[0].to_string(), words[1..].join(" ")));
            } else {
                for w in words {
                    let (k, v) = w
                        .split_once('=')
                        .unwrap_or_else(|| panic!("Dockerfile line {}: ENV {w:?}", i.line));
                    out.push((k.to_string(), unquote(v)));
                }
            }
        }
        out
    }
}

/// Exec form (`["a", "b"]`) or whitespace-separated words.
fn words(args: &str) -> Vec<String> {
    let a = args.trim();
    if a.starts_with('[') {
        flow_list(a)
    } else {
        a.split_whitespace().map(str::to_string).collect()
    }
}

/// The stages of the Dockerfile, with line continuations joined and comments dropped.
fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue; // also inside continuations, as Docker does
        }
        let (start, mut buf) = current.take().unwrap_or((n + 1, String::new()));
        if let Some(head) = line.strip_suffix('\\') {
            buf.push_str(head.trim_end());
            buf.push(' ');
            current = Some((start, buf));
        } else {
            buf.push_str(line);
            let (kw, args) = buf.split_once(char::is_whitespace).unwrap_or((&buf, ""));
            instructions.push(Instruction {
                keyword: kw.to_ascii_uppercase(),
                args: args.trim().to_string(),
                line: start,
            });
        }
    }
    assert!(current.is_none(), "Dockerfile ends inside a line continuation");

    let mut stages: Vec<Stage> = Vec::new();
    for inst in instructions {
        if inst.keyword == "FROM" {
            let w: Vec<&str> = inst
                .args
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .collect();
            let name = match w.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => name.to_string(),
                _ => stages.len().to_string(),
            };
            stages.push(Stage {
                name,
                base: w.first().map(|b| b.to_string()).unwrap_or_default(),
                instructions: Vec::new(),
            });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push(inst);
        } else {
            assert_eq!(
                inst.keyword, "ARG",
                "Dockerfile line {}: only ARG may come before the first FROM",
                inst.line
            );
        }
    }
    assert!(
        stages.len() >= 2,
        "the Dockerfile should be multi-stage (a builder and a runtime stage)"
    );
    stages
}

/// The stage that runs `cargo build`.
fn builder(stages: &[Stage]) -> &Stage {
    stages
        .iter()
        .find(|s| s.all("RUN").any(|r| r.args.contains("cargo build")))
        .expect("no Dockerfile stage runs `cargo build`")
}

/// The last stage: what `docker build` produces.
fn runtime(stages: &[Stage]) -> &Stage {
    stages.last().unwrap()
}

fn cargo_build_run(stage: &Stage) -> &Instruction {
    stage.all("RUN").find(|r| r.args.contains("cargo build")).unwrap()
}

/// Binaries the runtime stage copies from the builder: (source path, file name).
fn shipped_binaries(stages: &[Stage]) -> Vec<(String, String)> {
    let b = builder(stages);
    runtime(stages)
        .copies()
        .into_iter()
        .filter(|(flags, _, _)| flags.iter().any(|f| *f == format!("--from={}", b.name)))
        .flat_map(|(_, sources, _)| sources)
        .map(|s| {
            let name = s.rsplit('/').next().unwrap().to_string();
            (s, name)
        })
        .collect()
}

/// Where a context COPY puts `source`, relative to `workdir` (`None` if outside it).
fn landed_at(source: &str, dest: &str, n_sources: usize, workdir: &str) -> Option<String> {
    let dest_dir_like = dest.ends_with('/') || dest == "." || n_sources > 1;
    let dest = if let Some(abs) = dest.strip_prefix('/') {
        let wd = workdir.trim_matches('/');
        let rel = abs.trim_end_matches('/');
        if rel == wd {
            String::new()
        } else {
            rel.strip_prefix(&format!("{wd}/"))?.to_string()
        }
    } else {
        norm(dest)
    };
    let src = norm(source);
    Some(if root().join(&src).is_dir() || !dest_dir_like {
        dest
    } else {
        join(&dest, src.rsplit('/').next().unwrap())
    })
}

// ---------------------------------------------------------------- Cargo manifests

#[derive(Debug)]
struct Section {
    header: String,
    entries: Vec<(String, String)>,
}

impl Section {
    fn get(&self, key: &str) -> Option<String> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| unquote(v))
    }
}

/// Top-level tables and arrays of tables of a Cargo.toml (root keys under header "").
fn toml_sections(text: &str) -> Vec<Section> {
    let mut sections = vec![Section {
        header: String::new(),
        entries: Vec::new(),
    }];
    let mut lines = text.lines();
    while let Some(raw) = lines.next() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            sections.push(Section {
                header: line.to_string(),
                entries: Vec::new(),
            });
        } else if let Some((k, v)) = line.split_once('=') {
            let mut value = v.trim().to_string();
            if value.starts_with('[') {
                while !value.contains(']') {
                    match lines.next() {
                        Some(more) => value.push_str(more.trim()),
                        None => break,
                    }
                }
            }
            sections
                .last_mut()
                .unwrap()
                .entries
                .push((k.trim().to_string(), value));
        }
    }
    sections
}

#[derive(Debug)]
struct Member {
    dir: String,
    package: String,
    bins: Vec<String>,
    /// Files cargo must find to load the manifest (explicit targets, build script).
    required: Vec<String>,
}

fn members() -> Vec<Member> {
    let root_toml = toml_sections(&read("Cargo.toml"));
    let dirs = root_toml
        .iter()
        .find(|s| s.header == "[workspace]")
        .and_then(|s| s.entries.iter().find(|(k, _)| k == "members"))
        .map(|(_, v)| quoted(v))
        .unwrap_or_else(|| vec![".".to_string()]);
    dirs.iter()
        .map(|d| {
            let dir = norm(d);
            let manifest = join(&dir, "Cargo.toml");
            let sections = toml_sections(&read(&manifest));
            let package = sections
                .iter()
                .find(|s| s.header == "[package]")
                .and_then(|s| s.get("name"))
                .unwrap_or_else(|| panic!("{manifest}: no [package] name"));
            let mut bins = Vec::new();
            let mut required = vec![manifest.clone()];
            let exists = |rel: &str| root().join(join(&dir, rel)).exists();
            for s in &sections {
                let kind = s.header.trim_matches(|c| c == '[' || c == ']');
                let name = s.get("name").unwrap_or_else(|| package.clone());
                let candidates: Vec<String> = match kind {
                    "lib" => vec!["src/lib.rs".into()],
                    "bin" if name == package => vec!["src/main.rs".into()],
                    "bin" => vec![format!("src/bin/{name}.rs"), format!("src/bin/{name}/main.rs")],
                    "bench" | "test" | "example" => {
                        let folder = match kind {
                            "bench" => "benches",
                            "test" => "tests",
                            _ => "examples",
                        };
                        vec![format!("{folder}/{name}.rs"), format!("{folder}/{name}/main.rs")]
                    }
                    _ => continue,
                };
                if kind == "bin" {
                    bins.push(name.clone());
                }
                let path = s.get("path").unwrap_or_else(|| {
                    candidates
                        .iter()
                        .find(|c| exists(c))
                        .unwrap_or(&candidates[0])
                        .clone()
                });
                required.push(join(&dir, &norm(&path)));
            }
            if bins.is_empty() && exists("src/main.rs") {
                bins.push(package.clone());
            }
            let build = sections
                .iter()
                .find(|s| s.header == "[package]")
                .and_then(|s| s.get("build"))
                .unwrap_or_else(|| "build.rs".into());
            if exists(&build) {
                required.push(join(&dir, &build));
            }
            Member {
                dir,
                package,
                bins,
                required,
            }
        })
        .collect()
}

fn bin_owner(bin: &str) -> Option<Member> {
    members().into_iter().find(|m| m.bins.iter().any(|b| b == bin))
}

// ---------------------------------------------------------------- server source

/// The `default_value` of the clap argument whose `env = "<env>"`.
fn default_of_env(source: &str, env: &str) -> String {
    let at = source
        .find(&format!("env = \"{env}\""))
        .unwrap_or_else(|| panic!("no `env = \"{env}\"` argument"));
    let start = source[..at].rfind("#[arg(").expect("argument attribute");
    let end = at + source[at..].find(")]").expect("end of the argument attribute");
    let attr = &source[start..end];
    let value = attr
        .split("default_value = ")
        .nth(1)
        .unwrap_or_else(|| panic!("`{env}` has no default_value: {attr}"));
    quoted(value).into_iter().next().unwrap()
}

fn default_bind_port() -> u16 {
    port_of(&default_of_env(&read("src/config.rs"), "PERCACHE_BIND"))
}

fn config_env_names(path: &str) -> BTreeSet<String> {
    read(path)
        .split("env = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- compose.yaml

/// Indentation-based YAML blocks: enough for a compose file of mappings,
/// block sequences and flow sequences on one line.
#[derive(Debug, Clone, Default)]
struct Block(Vec<(usize, String)>);

impl Block {
    fn parse(text: &str) -> Block {
        Block(
            text.lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .map(|l| {
                    assert!(!l.contains('\t'), "compose.yaml: tab in {l:?}");
                    (l.len() - l.trim_start().len(), l.trim().to_string())
                })
                .collect(),
        )
    }

    fn indent(&self) -> usize {
        self.0.iter().map(|(i, _)| *i).min().unwrap_or(0)
    }

    /// (key, inline value, nested block) of each mapping entry at this level.
    fn entries(&self) -> Vec<(String, String, Block)> {
        let base = self.indent();
        let mut out: Vec<(String, String, Block)> = Vec::new();
        for (indent, line) in &self.0 {
            if *indent == base && !line.starts_with("- ") {
                let (k, v) = line
                    .split_once(':')
                    .unwrap_or_else(|| panic!("compose.yaml: expected `key: value`, got {line:?}"));
                out.push((unquote(k), v.trim().to_string(), Block::default()));
            } else if *indent > base {
                if let Some(last) = out.last_mut() {
                    last.2 .0.push((*indent, line.clone()));
                }
            }
        }
        out
    }

    fn get(&self, key: &str) -> Option<(String, Block)> {
        self.entries()
            .into_iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, b)| (v, b))
    }

    fn block(&self, key: &str) -> Block {
        self.get(key).map(|(_, b)| b).unwrap_or_default()
    }

    /// A scalar, a flow sequence or a block sequence, as a list of strings.
    fn list(&self, key: &str) -> Vec<String> {
        match self.get(key) {
            None => Vec::new(),
            Some((inline, _)) if inline.starts_with('[') => flow_list(&inline),
            Some((inline, _)) if !inline.is_empty() => {
                unquote(&inline).split_whitespace().map(str::to_string).collect()
            }
            Some((_, block)) => block
                .0
                .iter()
                .filter(|(i, l)| *i == block.indent() && l.starts_with("- "))
                .map(|(_, l)| unquote(&l[2..]))
                .collect(),
        }
    }

    fn scalar(&self, key: &str) -> Option<String> {
        self.get(key).map(|(v, _)| unquote(&v)).filter(|v| !v.is_empty())
    }

    /// `environment:` as a mapping or as a list of `KEY=value`.
    fn environment(&self) -> Vec<(String, String)> {
        let (inline, block) = match self.get("environment") {
            None => return Vec::new(),
            Some(e) => e,
        };
        assert!(
            inline.is_empty(),
            "compose.yaml: write `environment:` as a block, not {inline:?}"
        );
        if block.0.iter().all(|(_, l)| l.starts_with("- ")) {
            self.list("environment")
                .iter()
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k.to_string(), v.to_string())
                })
                .collect()
        } else {
            block
                .entries()
                .into_iter()
                .map(|(k, v, _)| (k, unquote(&v)))
                .collect()
        }
    }

    /// Keys of a mapping or items of a list (`depends_on:` takes both).
    fn names(&self, key: &str) -> Vec<String> {
        let list = self.list(key);
        if !list.is_empty() {
            return list;
        }
        self.block(key).entries().into_iter().map(|(k, _, _)| k).collect()
    }
}

fn compose_services() -> Block {
    let doc = Block::parse(&read("compose.yaml"));
    let services = doc.block("services");
    assert!(!services.0.is_empty(), "compose.yaml has no `services:` block");
    services
}

fn service(name: &str) -> Block {
    compose_services()
        .get(name)
        .unwrap_or_else(|| panic!("compose.yaml has no `{name}` service"))
        .1
}

fn env_value(svc: &Block, key: &str) -> Option<String> {
    svc.environment()
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

/// The address the mock is told to listen on: `--bind` in its command, else `MOCK_BIND`.
fn mock_bind(mock: &Block) -> String {
    let command = mock.list("command");
    let from_flag = command.iter().enumerate().find_map(|(i, w)| {
        if w == "--bind" {
            command.get(i + 1).cloned()
        } else {
            w.strip_prefix("--bind=").map(str::to_string)
        }
    });
    from_flag
        .or_else(|| env_value(mock, "MOCK_BIND"))
        .expect("the compose `mock` service sets no --bind (nor MOCK_BIND): it would listen on loopback only")
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
        for (sources, _) in stage.context_copies() {
            for source in sources {
                seen += 1;
                let rel = norm(&source);
                assert!(
                    !rel.contains(['*', '?', '[']),
                    "Dockerfile stage {}: COPY {source}: wildcards are not checked by this test",
                    stage.name
                );
                let path = root().join(&rel);
                assert!(
                    path.exists(),
                    "Dockerfile stage {}: COPY source `{source}` does not exist in the repository",
                    stage.name
                );
                assert!(
                    !path.is_dir() || has_a_file(&path),
                    "Dockerfile stage {}: COPY source `{source}` is an empty directory (absent from a git checkout)",
                    stage.name
                );
                for pattern in &ignore {
                    assert!(
                        !is_under(&rel, pattern),
                        "Dockerfile stage {}: COPY source `{source}` is excluded by `{pattern}` in .dockerignore",
                        stage.name
                    );
                }
            }
        }
    }
    assert!(seen >= 4, "found only {seen} COPY sources in the Dockerfile");
}

#[test]
fn the_builder_copies_everything_cargo_needs_in_the_repository_layout() {
    let stages = dockerfile();
    let b = builder(&stages);
    let workdir = b.workdir();
    assert_ne!(workdir, "/", "the builder stage should set a WORKDIR");

    // Where each context COPY lands must mirror where it is in the repository.
    let mut copied = Vec::new();
    for (sources, dest) in b.context_copies() {
        for source in &sources {
            let landed = landed_at(source, &dest, sources.len(), &workdir);
            assert_eq!(
                landed.as_deref(),
                Some(norm(source).as_str()),
                "builder COPY {source} -> {dest} (WORKDIR {workdir}) does not keep the repository layout cargo expects"
            );
            copied.push(norm(source));
        }
    }
    let covered = |path: &str| copied.iter().any(|c| is_under(path, c));

    let mut required = vec!["Cargo.lock".to_string()];
    for m in members() {
        required.extend(m.required);
    }
    for path in &required {
        assert!(
            root().join(path).exists(),
            "cargo needs `{path}` (declared in a manifest) but it is not in the repository"
        );
        assert!(
            covered(path),
            "cargo needs `{path}` to load the workspace, but the builder stage does not COPY it \
             (a [[bench]]/[[test]] declared in Cargo.toml must be copied, e.g. `COPY benches/ benches/`)"
        );
    }

    // Files embedded at compile time (include_bytes!/include_str!) must be copied too.
    let mut sources = Vec::new();
    for m in members() {
        rust_files(&root().join(&m.dir).join("src"), &mut sources);
    }
    let mut embedded = 0;
    for file in sources {
        let text = fs::read_to_string(&file).unwrap();
        for mac in ["include_bytes!(\"", "include_str!(\""] {
            for rest in text.split(mac).skip(1) {
                let lit = rest.split('"').next().unwrap();
                let target = lexical(&file.parent().unwrap().join(lit));
                let rel = target
                    .strip_prefix(root())
                    .unwrap_or_else(|_| panic!("{} embeds {lit}, outside the repository", file.display()))
                    .to_string_lossy()
                    .into_owned();
                embedded += 1;
                assert!(
                    covered(&rel),
                    "{} embeds `{rel}` at compile time, but the builder stage does not COPY it",
                    file.display()
                );
            }
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
    let b = builder(&stages);
    assert!(
        b.base.starts_with("rust:") && b.base.ends_with("-bookworm"),
        "the builder should be a rust:*-bookworm image (same glibc as the runtime), got {}",
        b.base
    );
    assert!(
        runtime(&stages).base.starts_with("debian:bookworm"),
        "the runtime should be debian:bookworm(-slim) to match the builder's glibc, got {}",
        runtime(&stages).base
    );
    let run = &cargo_build_run(b).args;
    for flag in ["--release", "--locked"] {
        assert!(run.contains(flag), "`cargo build` should use {flag}: {run}");
    }
    let shipped = shipped_binaries(&stages);
    assert!(
        !shipped.is_empty(),
        "the runtime stage copies no binary from the builder"
    );
    for (path, bin) in &shipped {
        let owner = bin_owner(bin)
            .unwrap_or_else(|| panic!("the runtime copies `{bin}`, which is no [[bin]] of the workspace"));
        assert!(
            run.contains(&format!("-p {}", owner.package))
                || run.contains(&format!("--package {}", owner.package))
                || run.contains("--workspace"),
            "`{bin}` is a binary of package `{}`, which `cargo build` does not build: {run}",
            owner.package
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

    let server = members()
        .into_iter()
        .find(|m| m.dir.is_empty())
        .expect("root package");
    assert_eq!(server.package, "percache");
    assert!(
        server.bins.contains(&"percache".to_string()),
        "Cargo.toml has no [[bin]] `percache`: {:?}",
        server.bins
    );
    let mock = members()
        .into_iter()
        .find(|m| m.dir == "mock_upstream")
        .expect("mock_upstream member");

    // The image's ENTRYPOINT: the server, in exec form so SIGTERM reaches it.
    let entry = runtime(&stages)
        .all("ENTRYPOINT")
        .last()
        .expect("the runtime stage has no ENTRYPOINT");
    assert!(
        entry.args.starts_with('['),
        "ENTRYPOINT should use the exec form [\"...\"] so that SIGTERM reaches the server: {}",
        entry.args
    );
    let program = words(&entry.args).remove(0);
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
    let mock_entry = mock_svc.list("entrypoint");
    let mock_program = mock_entry
        .first()
        .expect("the compose `mock` service has no entrypoint")
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
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
        mock_svc.scalar("build"),
        service("percache").scalar("build"),
        "the `mock` service should be built from the same Dockerfile as `percache`"
    );
}

#[test]
fn the_runtime_image_carries_the_assets_beside_the_binary() {
    let stages = dockerfile();
    let rt = runtime(&stages);
    let workdir = rt.workdir();
    let carried = rt.context_copies().into_iter().any(|(sources, dest)| {
        sources.iter().any(|s| norm(s) == "assets")
            && landed_at("assets", &dest, sources.len(), &workdir).as_deref() == Some("assets")
    });
    assert!(
        carried,
        "the runtime stage should COPY assets/ to {workdir}/assets (WORKDIR {workdir})"
    );
}

#[test]
fn ports_agree_with_the_default_bind() {
    let port = default_bind_port();
    assert_eq!(port, 8080, "src/config.rs: default bind port changed?");
    let stages = dockerfile();
    let rt = runtime(&stages);

    let exposed: Vec<u16> = rt
        .all("EXPOSE")
        .flat_map(|i| i.args.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .map(|p| {
            p.trim_end_matches("/tcp")
                .parse()
                .unwrap_or_else(|_| panic!("EXPOSE {p}"))
        })
        .collect();
    assert_eq!(
        exposed,
        vec![port],
        "EXPOSE should be the port of the default bind in src/config.rs"
    );

    let bind = rt
        .env()
        .into_iter()
        .rev()
        .find(|(k, _)| k == "PERCACHE_BIND")
        .map(|(_, v)| v)
        .expect("the runtime stage should set ENV PERCACHE_BIND (the default listens on loopback only)");
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

    let published = service("percache").list("ports");
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
        .all("HEALTHCHECK")
        .last()
        .expect("the runtime stage has no HEALTHCHECK");
    let url = check
        .args
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no http:// URL in HEALTHCHECK {}", check.args));
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
    let health = read("src/routes/health.rs");
    assert!(
        health.contains(&format!("#[get(\"{path}\")]")),
        "HEALTHCHECK probes {path}, which src/routes/health.rs does not serve"
    );
    let tool = words(check.args.split(" CMD ").nth(1).unwrap_or_default())
        .into_iter()
        .next()
        .unwrap_or_default();
    if tool == "curl" || tool == "wget" {
        assert!(
            rt.all("RUN")
                .any(|r| r.args.contains("install") && r.args.contains(&tool)),
            "HEALTHCHECK uses {tool}, which the runtime stage does not install"
        );
    }
}

#[test]
fn the_runtime_stage_runs_as_a_non_root_user() {
    let stages = dockerfile();
    let rt = runtime(&stages);
    let user = rt
        .all("USER")
        .last()
        .expect("the runtime stage sets no USER: it would run as root")
        .args
        .clone();
    let name = user.split(':').next().unwrap().trim();
    assert!(
        !name.is_empty() && name != "root" && name != "0",
        "the runtime stage should run as a non-root user, not USER {user}"
    );
    if let Ok(uid) = name.parse::<u32>() {
        assert!(uid > 0, "USER {user} is root");
    } else {
        assert!(
            rt.all("RUN")
                .any(|r| r.args.contains("useradd") && r.args.contains(name)),
            "USER {name} is never created (useradd) in the runtime stage"
        );
    }
}

#[test]
fn compose_wires_the_server_to_redis_and_the_mock() {
    let services = compose_services();
    let names: BTreeSet<String> = services.entries().into_iter().map(|(k, _, _)| k).collect();
    for s in ["redis", "mock", "percache"] {
        assert!(names.contains(s), "compose.yaml has no `{s}` service: {names:?}");
    }
    let redis = service("redis");
    let mock = service("mock");
    let server = service("percache");

    assert!(
        redis.scalar("image").is_some_and(|i| i.starts_with("redis:")),
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
    let probe = mock.block("healthcheck").list("test");
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
        "SESSION_KEY should come from the host environment and be required (${{SESSION_KEY:?...}}), not be written in compose.yaml: {key}"
    );

    let deps = server.names("depends_on");
    for s in ["redis", "mock"] {
        assert!(
            deps.iter().any(|d| d == s),
            "compose `percache` should depend on `{s}`: {deps:?}"
        );
    }
}

#[test]
fn env_var_names_are_settings_of_the_binaries() {
    let server_env = config_env_names("src/config.rs");
    let mock_env = config_env_names("mock_upstream/src/main.rs");

    let mut used = BTreeSet::new();
    for (k, _) in runtime(&dockerfile()).env() {
        assert!(
            server_env.contains(&k),
            "the Dockerfile sets ENV {k}, which is no `env = \"{k}\"` in src/config.rs"
        );
        used.insert(k);
    }
    for (k, _) in service("percache").environment() {
        assert!(
            server_env.contains(&k),
            "compose `percache` sets {k}, which is no `env = \"{k}\"` in src/config.rs"
        );
        used.insert(k);
    }
    for (k, _) in service("mock").environment() {
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
