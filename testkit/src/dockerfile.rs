//! A Dockerfile as stages of instructions (parsed by the `dockerfile-parser`
//! crate) and `.dockerignore` as a matcher (the `ignore` crate's gitignore
//! rules), for tests that check container files against a repository
//! without a Docker daemon.

use std::path::{Path, PathBuf};

use dockerfile_parser::{Dockerfile, Instruction, ShellOrExecExpr};
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::paths::norm;

/// One build stage: its name (`AS name`, else its index), its base image as
/// written, and its instructions.
pub struct Stage {
    pub name: String,
    pub base: String,
    pub instructions: Vec<Instruction>,
}

/// A COPY or ADD: `from` is the stage of `--from=`, `None` for the build context.
pub struct Copy {
    pub from: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
}

/// A parsed Dockerfile: its stages, and every instruction's keyword and line.
pub struct Parsed {
    pub stages: Vec<Stage>,
    /// (KEYWORD, line) of every instruction, in order, including those
    /// before the first FROM.
    pub keywords: Vec<(String, usize)>,
}

impl Copy {
    /// Where this context COPY puts `source` (a path in `root`), relative to
    /// `workdir` (`None` if outside it).
    pub fn landed_at(&self, source: &str, workdir: &str, root: &Path) -> Option<String> {
        let into_dir = self.dest.ends_with('/') || self.dest == "." || self.sources.len() > 1;
        let dest = match self.dest.starts_with('/') {
            true => Path::new(&self.dest).strip_prefix(workdir).ok()?.to_path_buf(),
            false => PathBuf::from(norm(&self.dest)),
        };
        let src = norm(source);
        let name = src.rsplit('/').next().unwrap();
        let at = if root.join(&src).is_dir() || !into_dir {
            dest
        } else {
            dest.join(name)
        };
        Some(at.to_string_lossy().into_owned())
    }
}

/// Parses `text`; the error says where the crate's grammar stopped.
pub fn parse(text: &str) -> Result<Parsed, String> {
    let file = Dockerfile::parse(text).map_err(|e| format!("{e}"))?;
    let line = |i: &Instruction| text[..i.span().start].matches('\n').count() + 1;
    let keywords = file.instructions.iter().map(|i| (keyword(i), line(i))).collect();
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in &file.instructions {
        match (instruction, stages.last_mut()) {
            (Instruction::From(from), _) => stages.push(Stage {
                name: from
                    .alias
                    .as_ref()
                    .map_or(stages.len().to_string(), |a| a.content.clone()),
                base: from.image.content.clone(),
                instructions: Vec::new(),
            }),
            (other, Some(stage)) => stage.instructions.push(other.clone()),
            (_, None) => {} // a global ARG
        }
    }
    Ok(Parsed { stages, keywords })
}

/// The instruction's keyword in capitals (`COPY`, `HEALTHCHECK`...).
pub fn keyword(i: &Instruction) -> String {
    let known = match i {
        Instruction::From(_) => "FROM",
        Instruction::Arg(_) => "ARG",
        Instruction::Label(_) => "LABEL",
        Instruction::Run(_) => "RUN",
        Instruction::Entrypoint(_) => "ENTRYPOINT",
        Instruction::Cmd(_) => "CMD",
        Instruction::Copy(_) => "COPY",
        Instruction::Env(_) => "ENV",
        Instruction::Misc(m) => return m.instruction.content.to_ascii_uppercase(),
    };
    known.to_owned()
}

/// A shell-form or exec-form expression as one line of text.
fn text(expr: &ShellOrExecExpr) -> String {
    match expr {
        ShellOrExecExpr::Shell(shell) => shell.to_string(),
        ShellOrExecExpr::Exec(exec) => exec.as_str_vec().join(" "),
    }
}

impl Stage {
    /// The arguments of every `keyword` instruction that the crate leaves
    /// as text (WORKDIR, USER, EXPOSE, HEALTHCHECK, ADD...), in order.
    pub fn all(&self, keyword: &str) -> Vec<String> {
        let misc = self.instructions.iter().filter_map(Instruction::as_misc);
        let named = misc.filter(|m| m.instruction.content.eq_ignore_ascii_case(keyword));
        named.map(|m| m.arguments.to_string().trim().to_owned()).collect()
    }

    /// The arguments of the last `keyword` instruction (see [`Stage::all`]).
    pub fn last(&self, keyword: &str) -> Option<String> {
        self.all(keyword).pop()
    }

    /// The RUN instructions as text, line continuations joined.
    pub fn runs(&self) -> Vec<String> {
        let runs = self.instructions.iter().filter_map(Instruction::as_run);
        runs.map(|r| text(&r.expr)).collect()
    }

    /// Whether a RUN instruction contains all of `needles`.
    pub fn runs_all(&self, needles: &[&str]) -> bool {
        self.runs().iter().any(|r| needles.iter().all(|n| r.contains(n)))
    }

    /// The last WORKDIR (`/` if none).
    pub fn workdir(&self) -> String {
        self.last("WORKDIR").unwrap_or_else(|| "/".into())
    }

    /// The exec-form ENTRYPOINT's words; `Err` with the text of a shell form
    /// (which would keep SIGTERM from the program).
    pub fn entrypoint(&self) -> Option<Result<Vec<String>, String>> {
        let mut entrypoints = self.instructions.iter().filter_map(Instruction::as_entrypoint);
        let last = entrypoints.next_back()?;
        Some(match &last.expr {
            ShellOrExecExpr::Exec(exec) => Ok(exec.as_str_vec().into_iter().map(String::from).collect()),
            shell => Err(text(shell)),
        })
    }

    /// The COPY instructions, and ADD ones read as `ADD [--flags] src... dest`.
    pub fn copies(&self) -> Vec<Copy> {
        let mut out = Vec::new();
        for i in &self.instructions {
            if let Instruction::Copy(c) = i {
                let from = c.flags.iter().find(|f| f.name.content == "from");
                out.push(Copy {
                    from: from.map(|f| f.value.content.clone()),
                    sources: c.sources.iter().map(|s| s.content.clone()).collect(),
                    dest: c.destination.content.clone(),
                });
            }
        }
        for add in self.all("ADD") {
            let mut words: Vec<String> = add
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .map(String::from)
                .collect();
            let dest = words.pop().unwrap_or_default();
            out.push(Copy {
                from: None,
                sources: words,
                dest,
            });
        }
        out
    }

    /// COPY instructions whose sources come from the build context (the repository).
    pub fn context_copies(&self) -> Vec<Copy> {
        self.copies().into_iter().filter(|c| c.from.is_none()).collect()
    }

    /// The environment set by ENV, in order.
    pub fn env(&self) -> Vec<(String, String)> {
        let envs = self.instructions.iter().filter_map(Instruction::as_env);
        let vars = envs.flat_map(|e| e.vars.iter());
        vars.map(|v| (v.key.content.clone(), v.value.to_string()))
            .collect()
    }
}

/// The patterns of a `.dockerignore` in `root`, as a matcher.
pub fn dockerignore(root: &Path) -> Gitignore {
    let mut builder = GitignoreBuilder::new(root);
    if let Some(e) = builder.add(root.join(".dockerignore")) {
        panic!("reading {}/.dockerignore: {e}", root.display());
    }
    builder.build().expect(".dockerignore patterns build")
}

/// The `.dockerignore` pattern that excludes `rel` (or a folder above it), if any.
pub fn ignored_by(ignore: &Gitignore, root: &Path, rel: &str) -> Option<String> {
    let matched = ignore.matched_path_or_any_parents(rel, root.join(rel).is_dir());
    matched
        .is_ignore()
        .then(|| matched.inner().map_or(String::new(), |g| g.original().to_owned()))
}

/// The first stage with a RUN containing `needle`, and that RUN's text.
pub fn stage_running<'a>(stages: &'a [Stage], needle: &str) -> Option<(&'a Stage, String)> {
    let run = |s: &Stage| s.runs().into_iter().find(|r| r.contains(needle));
    stages.iter().find_map(|s| Some((s, run(s)?)))
}

impl Stage {
    /// What this stage copies from stage `from`: (source path, file name).
    pub fn copied_from(&self, from: &str) -> Vec<(String, String)> {
        let copies = self
            .copies()
            .into_iter()
            .filter(|c| c.from.as_deref() == Some(from));
        let name = |s: &String| s.rsplit('/').next().unwrap_or_default().to_string();
        copies
            .flat_map(|c| c.sources)
            .map(|s| (s.clone(), name(&s)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "ARG V=1\nFROM rust:${V}-bookworm AS builder\nWORKDIR /src\nCOPY --chown=1:1 a b ./\n\
                        RUN --mount=type=cache,target=/x \\\n    cargo build\nFROM debian\n\
                        COPY --from=builder /out/app /bin/\nENV A=1 \\\n    B=\"two words\"\n\
                        ENTRYPOINT [\"app\"]\nUSER 10:10\n";

    #[test]
    fn stages_copies_env_and_entrypoint_are_read() {
        let parsed = parse(FILE).unwrap();
        let (build, run) = (&parsed.stages[0], &parsed.stages[1]);
        assert_eq!(
            (build.name.as_str(), build.base.as_str()),
            ("builder", "rust:${V}-bookworm")
        );
        assert_eq!(run.name, "1");
        assert_eq!(build.context_copies()[0].sources, ["a", "b"]);
        assert!(build.runs_all(&["--mount=type=cache", "cargo build"]));
        assert_eq!(run.copied_from("builder"), [("/out/app".into(), "app".into())]);
        assert_eq!(
            run.env(),
            [("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        assert_eq!(run.entrypoint(), Some(Ok(vec!["app".into()])));
        assert_eq!(run.last("USER").as_deref(), Some("10:10"));
        assert_eq!(parsed.keywords[0], ("ARG".into(), 1));
        assert_eq!(parsed.keywords.last().unwrap(), &("USER".into(), 12));
    }
}
