import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative, dirname, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The house rules of STYLE.md, checked on every import of every source file. A failure names the
 * file, the line and the rule.
 */
const ROOT = resolve(dirname(new URL(import.meta.url).pathname), '..');
const SOURCE_DIRS = ['agent', 'mapping-server', 'shared', 'cli', 'eval'];

function walk(dir: string): string[] {
  const out: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const n of names) {
    const p = join(dir, n);
    if (n === 'node_modules' || n === 'native') continue;
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (n.endsWith('.ts') && !n.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

interface Edge {
  from: string;
  to: string;
  line: number;
  typeOnly: boolean;
}

function importsOf(file: string): Edge[] {
  const text = readFileSync(file, 'utf8');
  const edges: Edge[] = [];
  const re = /^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+['"](\.[^'"]+)['"]|^\s*import\s+['"](\.[^'"]+)['"]|import\(\s*['"](\.[^'"]+)['"]\s*\)/gm;
  for (const m of text.matchAll(re)) {
    const spec = m[3] ?? m[4] ?? m[5];
    const line = text.slice(0, m.index).split('\n').length;
    edges.push({ from: relative(ROOT, file), to: relative(ROOT, resolve(dirname(file), spec)), line, typeOnly: Boolean(m[2]) });
  }
  return edges;
}

const files = SOURCE_DIRS.flatMap((d) => walk(join(ROOT, d)));
const edges = files.flatMap(importsOf);
const under = (p: string, dir: string) => p === dir || p.startsWith(dir + '/');

function broken(rule: (e: Edge) => boolean): string[] {
  return edges.filter(rule).map((e) => `${e.from}:${e.line} imports ${e.to}`);
}

describe('layout rules (STYLE.md)', () => {
  it('finds the source files', () => {
    expect(files.length).toBeGreaterThan(10);
  });

  it('shared/ imports nothing from agent/ or mapping-server/', () => {
    expect(broken((e) => under(e.from, 'shared') && (under(e.to, 'agent') || under(e.to, 'mapping-server')))).toEqual([]);
  });

  it('agent/ and mapping-server/ never import each other', () => {
    expect(
      broken((e) => (under(e.from, 'agent') && under(e.to, 'mapping-server')) || (under(e.from, 'mapping-server') && under(e.to, 'agent'))),
    ).toEqual([]);
  });

  it('agent/tun knows nothing of the overlay', () => {
    expect(broken((e) => under(e.from, 'agent/tun') && !under(e.to, 'agent/tun') && !['shared/errors.ts', 'shared/native.ts'].includes(e.to))).toEqual([]);
  });

  it('dataplane/ imports no control plane: only types from tun, the UDP socket and the map-cache, and never runs msgpack', () => {
    const allowedTypes = ['agent/tun', 'agent/mapcache', 'shared/udp'];
    const bad = broken(
      (e) =>
        under(e.from, 'agent/dataplane') &&
        !under(e.to, 'agent/dataplane') &&
        (under(e.to, 'agent') ? !e.typeOnly || !allowedTypes.some((d) => under(e.to, d)) : under(e.to, 'shared/udp') && !e.typeOnly),
    );
    expect(bad).toEqual([]);
    const msgpack = files.filter((f) => under(relative(ROOT, f), 'agent/dataplane') && /msgpackr/.test(readFileSync(f, 'utf8')));
    expect(msgpack).toEqual([]);
  });

  it('paths/ (choosing a path) imports no RM code', () => {
    expect(broken((e) => under(e.from, 'agent/paths') && under(e.to, 'agent/rm'))).toEqual([]);
  });

  it('agent/sessions (handshakes and their keys, control plane): the handshake imports only shared/; the manager reads the map-cache and uplinks and implements the data plane\'s Sealing interface (types only)', () => {
    const manager = 'agent/sessions/manager.ts';
    const allowed = (e: Edge) =>
      e.from === manager && ((e.typeOnly && (under(e.to, 'agent/mapcache') || under(e.to, 'agent/uplinks'))) || e.to === 'agent/dataplane/sealing.ts');
    expect(broken((e) => under(e.from, 'agent/sessions') && under(e.to, 'agent') && !under(e.to, 'agent/sessions') && !allowed(e))).toEqual([]);
  });

  it('agent/uplinks and agent/mapcache depend on no other agent concept (paths, rm, dataplane)', () => {
    expect(
      broken((e) => (under(e.from, 'agent/uplinks') || under(e.from, 'agent/mapcache')) && ['agent/paths', 'agent/rm', 'agent/dataplane'].some((d) => under(e.to, d))),
    ).toEqual([]);
  });

  it('nothing imports upward: a file in a concept folder never imports a file of an enclosing folder', () => {
    const bad = broken((e) => {
      const fromDir = dirname(e.from);
      const toDir = dirname(e.to);
      // toDir is a strict ancestor of fromDir: the file imports one of an enclosing folder's own files.
      // shared/'s own files are the base vocabulary (errors, IDs, keys) every shared folder builds on.
      return toDir !== fromDir && fromDir.startsWith(toDir + '/') && toDir !== 'shared';
    });
    expect(bad).toEqual([]);
  });

  it('no two source files share a name across folders', () => {
    const byName = new Map<string, string[]>();
    // eval/ is a separate program (the routing evaluation), not one of the product's concepts.
    for (const f of files.filter((x) => !under(relative(ROOT, x), 'eval'))) {
      const name = f.split('/').at(-1) as string;
      byName.set(name, [...(byName.get(name) ?? []), relative(ROOT, f)]);
    }
    // By design (STYLE.md): each program has one main.ts, one config.ts and one metrics.ts (its
    // Prometheus names), and each I/O edge its in-memory double, memory.ts, beside the real device.
    const exempt = new Set(['main.ts', 'config.ts', 'metrics.ts', 'memory.ts']);
    const shared = [...byName].filter(([n, fs]) => fs.length > 1 && !exempt.has(n)).map(([n, fs]) => `${n}: ${fs.join(', ')}`);
    expect(shared).toEqual([]);
  });

  it('source never imports test/ or scripts/', () => {
    expect(broken((e) => under(e.to, 'test') || under(e.to, 'scripts'))).toEqual([]);
  });

  it('has no import cycles', () => {
    const graph = new Map<string, string[]>();
    for (const e of edges) {
      if (e.typeOnly) continue;
      graph.set(e.from, [...(graph.get(e.from) ?? []), e.to]);
    }
    const cycles: string[] = [];
    const state = new Map<string, 1 | 2>();
    const stack: string[] = [];
    const visit = (n: string) => {
      state.set(n, 1);
      stack.push(n);
      for (const m of graph.get(n) ?? []) {
        if (state.get(m) === 1) cycles.push([...stack.slice(stack.indexOf(m)), m].join(' → '));
        else if (!state.has(m)) visit(m);
      }
      stack.pop();
      state.set(n, 2);
    };
    for (const n of graph.keys()) if (!state.has(n)) visit(n);
    expect(cycles).toEqual([]);
  });
});
