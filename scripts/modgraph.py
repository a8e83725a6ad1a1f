#!/usr/bin/env python3
"""Module import graph of src/: file-level nodes, edges from `crate::a::b` paths; prints SCCs."""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
files = {}
for d, _, fs in os.walk(root):
    for f in fs:
        if f.endswith('.rs'):
            p = os.path.join(d, f)
            rel = os.path.relpath(p, root)[:-3]
            parts = rel.split('/')
            if parts[-1] == 'mod': parts = parts[:-1]
            if parts == ['lib'] or parts == ['main']: continue
            files['::'.join(parts)] = p
mods = set(files)
def resolve(path):
    segs = path.split('::')
    for n in range(len(segs), 0, -1):
        cand = '::'.join(segs[:n])
        if cand in mods: return cand
    return None
def strip_tests(src):
    # drop #[cfg(test)] mod tests { ... } blocks roughly
    i = src.find('#[cfg(test)]')
    return src if i < 0 else src[:i]
edges = {m: set() for m in mods}
for m, p in files.items():
    src = strip_tests(open(p).read())
    src = re.sub(r'//.*', '', src)
    # expand use crate::{a, b::{c}} groups
    for mm in re.finditer(r'crate::((?:\w+::)*)\{([^;]*?)\};', src, re.S):
        base = mm.group(1)
        body = mm.group(2)
        for item in re.findall(r'(\w+(?:::\w+)*)', body):
            t = resolve((base + item).rstrip(':'))
            if t and t != m and not t.startswith(m + '::'): edges[m].add(t)
    for mm in re.finditer(r'crate::(\w+(?:::\w+)*)', src):
        t = resolve(mm.group(1))
        if t and t != m and not m.startswith(t + '::') and not t.startswith(m + '::'): edges[m].add(t)
    # super:: references
    for mm in re.finditer(r'\bsuper::(\w+(?:::\w+)*)', src):
        segs = m.split('::')
        isdir = files[m].endswith('mod.rs')
        parent = segs[:-1] if not isdir else segs[:-1]
        t = resolve('::'.join(parent + mm.group(1).split('::'))) if parent else resolve(mm.group(1))
        if t and t != m and not m.startswith(t + '::'): edges[m].add(t)
# collapse to file level; compute SCC (Tarjan)
sys.setrecursionlimit(10000)
index = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
def sc(v):
    index[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in index: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in sorted(mods):
    if v not in index: sc(v)
big = [s for s in sccs if len(s) > 1]
for s in sorted(big, key=len, reverse=True):
    print(len(s), sorted(s))
    if '-v' in sys.argv:
        ss = set(s)
        for a in sorted(s):
            print('   ', a, '->', sorted(edges[a] & ss))
if not big: print('no cycles')
