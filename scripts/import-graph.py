#!/usr/bin/env python3
"""The import graph between the files of src/, from their `use` lines and
paths (`crate::a::b`, `super::x`, `self::x`), and its checks:

- no import circle between files (strongly connected components of size > 1);
- at most MAX_UPWARD imports from a lower layer to a higher one (LAYERS).

Usage: python3 scripts/import-graph.py [--list] [--src DIR]
(exit 1 when a check fails; `--src` checks another tree, for the test of
this script itself)
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# From the bottom up: a file may import files of its own layer or below.
LAYERS = [
    "clock", "probe", "user", "tls", "telemetry", "widget", "upstream", "cache",
    "session", "admin", "views", "defence", "config", "routes", "startup",
    "lib", "main",
]
MAX_UPWARD = 2


def modules():
    """Module path (tuple) -> file, for every file of src/."""
    out = {}
    for root, _, files in os.walk(SRC):
        for f in files:
            # Test-only files (`#[cfg(test)] mod core_tests;`) are not part of
            # the design's layers.
            if not f.endswith(".rs") or f.endswith("_tests.rs"):
                continue
            path = os.path.relpath(os.path.join(root, f), SRC)
            parts = path[:-3].split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            out[tuple(parts)] = path
    return out


def resolve(mods, base, segs):
    """The longest module prefix of base+segs that is a file."""
    full = list(base) + segs
    for n in range(len(full), -1, -1):
        if tuple(full[:n]) in mods:
            return tuple(full[:n])
    return None


USE = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\buse\s+(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\}", re.S)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def edges(mods):
    out = {}
    for mod, path in mods.items():
        text = strip_comments(open(os.path.join(SRC, path)).read())
        # Test modules are part of their file but not of its interface.
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        is_mod_file = path.endswith("mod.rs") or path in ("lib.rs", "main.rs")
        here = mod if is_mod_file else mod[:-1] if mod else mod
        self_mod = mod
        targets = set()

        def add(kind, rest):
            segs = [s for s in rest.split("::") if s]
            if kind == "crate":
                base = ()
            elif kind == "super":
                base = here[:-1] if is_mod_file else here
                base = (mod[:-1] if not is_mod_file else mod[:-1])
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
            else:
                base = self_mod
            target = resolve(mods, base, segs)
            if target is not None and target != mod:
                targets.add(target)

        for m in GROUP.finditer(text):
            kind, prefix, inner = m.groups()
            for item in re.split(r",", inner):
                item = item.strip().split(" as ")[0].strip()
                item = item.split("::{")[0]
                if item and item != "self":
                    add(kind, prefix + "::" + item)
                else:
                    add(kind, prefix)
        for m in USE.finditer(text):
            add(m.group(1), m.group(2))
        # A module declaration is not a use of the child.
        out[mod] = {t for t in targets if not (len(t) == len(mod) + 1 and t[: len(mod)] == mod and is_mod_file)}
    return out


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def layer(mod):
    top = mod[0] if mod else "lib"
    return LAYERS.index(top) if top in LAYERS else len(LAYERS)


def name(mod):
    return "/".join(mod) or "lib"


def main():
    global SRC
    if "--src" in sys.argv:
        SRC = sys.argv[sys.argv.index("--src") + 1]
    mods = modules()
    graph = edges(mods)
    circles = sccs(graph)
    upward = sorted(
        (name(a), name(b)) for a, ts in graph.items() for b in ts if layer(b) > layer(a)
    )
    if "--list" in sys.argv:
        for a in sorted(graph):
            for b in sorted(graph[a]):
                print(f"{name(a)} -> {name(b)}")
    for c in circles:
        print("circle:", " <-> ".join(sorted(name(m) for m in c)))
    for a, b in upward:
        print(f"upward: {a} -> {b}")
    print(f"{len(mods)} files, {sum(len(t) for t in graph.values())} imports, "
          f"{len(circles)} circles, {len(upward)} upward (at most {MAX_UPWARD})")
    return 0 if not circles and len(upward) <= MAX_UPWARD else 1


if __name__ == "__main__":
    sys.exit(main())
