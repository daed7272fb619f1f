//! The container files (`Dockerfile`, `compose.yaml`, `.dockerignore`) checked
//! against the repository, as data: no Docker daemon is needed. They cannot
//! drift from the code unnoticed: COPY sources, binary names, ports, the health
//! route, the env var names and the non-root user are all checked here.
//!
//! The workspace (members, packages, targets) comes from `cargo metadata`, the
//! server's env names and defaults from its clap command (`Settings::command()`),
//! `compose.yaml` from `serde_norway`, the Dockerfile from `dockerfile-parser`
//! and `.dockerignore` from the `ignore` crate's gitignore rules (all through
//! `testkit`). The mock's clap struct is private to its binary, so its env
//! names are read from `mock_upstream/src/main.rs` as text.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use clap::CommandFactory;
use percache::config::Settings;
use testkit::compose::{env_value, environment, flag_or_env, list, text, Value};
use testkit::dockerfile::{dockerignore, ignored_by, stage_running, Stage};
use testkit::paths::{files, host_of, is_under, norm, port_of};
use testkit::workspace::{clap_env, embedded_files, Member};

// ---------------------------------------------------------------- files

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

// ---------------------------------------------------------------- Dockerfile

/// The instructions the checks understand; any other fails the parse.
const KEYWORDS: &str = "ARG FROM WORKDIR COPY ADD RUN ENV USER EXPOSE HEALTHCHECK ENTRYPOINT";

/// The stages of the Dockerfile: only known instructions, only ARG before
/// the first FROM, a builder and a runtime.
fn dockerfile() -> Vec<Stage> {
    let parsed = testkit::dockerfile::parse(&read("Dockerfile"))
        .unwrap_or_else(|e| panic!("the Dockerfile does not parse: {e}"));
    for (keyword, line) in &parsed.keywords {
        assert!(
            KEYWORDS.split(' ').any(|k| k == keyword),
            "Dockerfile line {line}: unknown {keyword}"
        );
    }
    let before_from = parsed.keywords.iter().take_while(|(k, _)| k != "FROM");
    for (keyword, line) in before_from {
        assert_eq!(
            keyword, "ARG",
            "Dockerfile line {line}: only ARG may come before the first FROM"
        );
    }
    assert!(
        parsed.stages.len() >= 2,
        "the Dockerfile should be multi-stage (a builder and a runtime)"
    );
    parsed.stages
}

/// The stage that runs `cargo build`, and the text of that RUN.
fn builder(stages: &[Stage]) -> (&Stage, String) {
    stage_running(stages, "cargo build").expect("no Dockerfile stage runs `cargo build`")
}

/// The last stage: what `docker build` produces.
fn runtime(stages: &[Stage]) -> &Stage {
    stages.last().unwrap()
}

/// Binaries the runtime stage copies from the builder: (source path, file name).
fn shipped_binaries(stages: &[Stage]) -> Vec<(String, String)> {
    runtime(stages).copied_from(&builder(stages).0.name)
}

// ---------------------------------------------------------------- workspace and settings

fn members() -> Vec<Member> {
    testkit::workspace::members(root())
}

fn member(dir: &str) -> Member {
    let found = members().into_iter().find(|m| m.dir == dir);
    found.unwrap_or_else(|| panic!("no workspace member `{dir}`"))
}

/// (env name, default value) of every flag of the server that has an env twin.
fn server_env() -> Vec<(String, Option<String>)> {
    clap_env(&Settings::command())
}

fn default_bind_port() -> u16 {
    let bind = server_env().into_iter().find(|(e, _)| e == "PERCACHE_BIND");
    let bind = bind.expect("no flag of percache::config::Settings reads PERCACHE_BIND");
    port_of(&bind.1.expect("PERCACHE_BIND has no default value"))
}

/// The `env = "..."` names in the mock's source (its clap struct is private to its binary).
fn mock_env_names() -> BTreeSet<String> {
    let text = read("mock_upstream/src/main.rs");
    let names = text.split("env = \"").skip(1);
    names
        .map(|rest| rest.split('"').next().unwrap().to_string())
        .collect()
}

// ---------------------------------------------------------------- compose.yaml

fn compose_services() -> testkit::compose::Mapping {
    testkit::compose::services(&read("compose.yaml"))
}

fn service(name: &str) -> Value {
    let svc = compose_services().get(name).cloned();
    svc.unwrap_or_else(|| panic!("compose.yaml has no `{name}` service"))
}

/// The address the mock is told to listen on: `--bind` in its command, else `MOCK_BIND`.
fn mock_bind(mock: &Value) -> String {
    let bind = flag_or_env(mock, "--bind", "MOCK_BIND");
    bind.expect("the compose `mock` service sets no --bind (nor MOCK_BIND): it would listen on loopback only")
}

// ================================================================ checks

#[test]
fn every_copy_source_exists_in_the_repository_and_is_not_dockerignored() {
    let ignore = dockerignore(root());
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
            if let Some(pattern) = ignored_by(&ignore, root(), &rel) {
                panic!("{at} is excluded by `{pattern}` in .dockerignore");
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
                copy.landed_at(source, &workdir, root()).as_deref(),
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
    let embedded: Vec<_> = members().iter().flat_map(|m| embedded_files(root(), m)).collect();
    for (file, rel) in &embedded {
        assert!(
            covered(rel),
            "{} embeds `{rel}` at compile time, but the builder stage does not COPY it",
            file.display()
        );
    }
    assert!(
        !embedded.is_empty(),
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
    // The runtime's glibc must be the builder's: a debian:bookworm(-slim)
    // runtime, or a `scratch` one whose files all come from debian:bookworm
    // stages (the builder's binaries aside).
    let glibc_from: Vec<&str> = if rt.base == "scratch" {
        rt.copies()
            .iter()
            .filter_map(|c| c.from.clone())
            .filter_map(|from| stages.iter().find(|s| s.name == from && s.name != b.name))
            .map(|s| s.base.as_str())
            .collect()
    } else {
        vec![rt.base.as_str()]
    };
    assert!(
        !glibc_from.is_empty() && glibc_from.iter().all(|base| base.starts_with("debian:bookworm")),
        "the runtime should be debian:bookworm(-slim), or scratch with its files from a \
         debian:bookworm stage (the builder's glibc); got {} (files from {glibc_from:?})",
        rt.base
    );
    let run = builder(&stages).1;
    let run = run.as_str();
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
        .entrypoint()
        .expect("the runtime stage has no ENTRYPOINT");
    let entry = entry.unwrap_or_else(|shell| {
        panic!("ENTRYPOINT should use the exec form [\"...\"] so that SIGTERM reaches the server: {shell}")
    });
    let program = entry.first().expect("ENTRYPOINT runs nothing");
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
            && copy.landed_at("assets", &workdir, root()).as_deref() == Some("assets")
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
        .iter()
        .flat_map(|args| args.split_whitespace())
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
    // The first word after CMD, in shell or exec form (`CMD ["curl", ...]`).
    let cmd = check.split(" CMD ").nth(1).unwrap_or_default();
    let mut words = cmd.split(|c: char| c.is_whitespace() || "[\",".contains(c));
    let tool = words.find(|w| !w.is_empty()).unwrap_or_default().to_string();
    if tool == "curl" || tool == "wget" {
        assert!(
            rt.runs_all(&["install", &tool]),
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
            rt.runs_all(&["useradd", name]),
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

/// The Kubernetes manifests validate against the Kubernetes API's schemas,
/// rejecting unknown fields (`kubernetes-validate --strict`, from PyPI;
/// `scripts/test.sh` installs it), and keep what issue 27 asks of them.
#[test]
fn the_kubernetes_manifests_validate_strictly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let manifests: Vec<_> = files(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    assert!(manifests.len() >= 2, "the manifests: {manifests:?}");
    let out = std::process::Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&manifests)
        .output()
        .expect("kubernetes-validate is installed (scripts/test.sh: pip install kubernetes-validate)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate --strict: {said}");
    for kind in ["deployment", "service", "poddisruptionbudget", "statefulset"] {
        assert!(
            said.contains(&format!("resource {kind}/")),
            "a {kind} was validated: {said}"
        );
    }
    let deployment = fs::read_to_string(dir.join("percache.yaml")).unwrap();
    for needed in [
        "path: /readyz",
        "path: /healthz",
        "runAsNonRoot: true",
        "readOnlyRootFilesystem: true",
        "secretRef:",
        "resources:",
    ] {
        assert!(deployment.contains(needed), "the Deployment has {needed}");
    }
}
