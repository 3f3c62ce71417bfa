#!/usr/bin/env python3
"""Fails when modules under src/ import each other in a circle.

A module is a file (src/engine/job.rs is crate::engine::job; a mod.rs is its directory's
module). An edge A -> B is a `use crate::B...` / `crate::B::` path or a `super::` path in A's
file, outside `#[cfg(test)]` modules; a module's own submodules and its parent are not edges
(a parent declares and re-exports its children, which is not a dependency on their peers).
Prints every strongly connected component of more than one module, and exits 1 if any."""
import os, re, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

def module_of(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[0] == "bin":
        return None
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return tuple(rel)

def strip_tests(text):
    # Drop `#[cfg(test)] mod x { ... }` blocks by brace matching.
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)

def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)

modules = {}
for d, _, files in os.walk(ROOT):
    for f in files:
        if f.endswith(".rs"):
            p = os.path.join(d, f)
            m = module_of(p)
            if m is not None:
                modules[m] = strip_comments(strip_tests(open(p).read()))
known = set(modules)

def resolve(path):
    """Longest known module prefix of a path."""
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in known:
            return tuple(path[:n])
    return None

def paths_in(mod, text):
    # Expand `use crate::a::{b, c::{d}}` shallowly: record crate::a::b and crate::a::c.
    for m in re.finditer(r"\b(crate|super(?:::super)*)::((?:\w+::)*)(\{[^;]*\}|\w+)", text):
        head, mid, tail = m.group(1), m.group(2), m.group(3)
        if head == "crate":
            base = []
        else:
            base = list(mod[: len(mod) - head.count("super")])
        segs = base + [s for s in mid.split("::") if s]
        if tail.startswith("{"):
            for part in re.split(r",", tail[1:-1].replace("{", ",").replace("}", ",")):
                part = part.strip().split("::")[0].strip()
                if part and part != "self":
                    yield segs + [part]
            yield segs
        else:
            yield segs + [tail]

edges = {m: set() for m in modules}
for mod, text in modules.items():
    for path in paths_in(mod, text):
        target = resolve(path)
        if target is None or target == mod:
            continue
        if target[: len(mod)] == mod or mod[: len(target)] == target:
            continue  # own submodule or an ancestor
        edges[mod].add(target)

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1
    stack.append(v); on.add(v)
    for w in edges[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v:
                break
        if len(comp) > 1:
            sccs.append(comp)
for v in modules:
    if v not in index:
        visit(v)

name = lambda m: "::".join(("crate",) + m)
for comp in sccs:
    members = set(comp)
    print("import circle:", ", ".join(sorted(name(m) for m in comp)))
    for m in sorted(comp):
        for t in sorted(edges[m] & members):
            print(f"    {name(m)} -> {name(t)}")
print(f"{len(modules)} modules, {sum(len(e) for e in edges.values())} edges, {len(sccs)} circles")
sys.exit(1 if sccs else 0)
