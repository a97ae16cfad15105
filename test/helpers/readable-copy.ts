import { chmod, cp, lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, sep } from 'node:path';
import { REPO } from './agents.ts';

/**
 * A copy of what the `realmnet` CLI needs to run, in a world-readable temp dir: for tests that run it
 * as another user (nobody). The checkout itself may lie where only root can read it (a clone inside
 * `mktemp -d`, or under /root), and then such a user cannot even load bin/realmnet.js.
 *
 * Copied: the source folders the CLI imports, package.json (for "type": "module"), and the runtime
 * dependencies with everything they need, found by following package.json files through node's
 * resolution (nearest node_modules up the tree). Not the native addons: they are loaded lazily, and
 * these tests stop before opening a device. About 60 MB, a fraction of a second.
 */
const SOURCES = ['bin', 'cli', 'agent', 'shared', 'mapping-server', 'package.json', 'tsconfig.json'];

export interface ReadableCopy {
  readonly root: string;
  /** bin/realmnet.js inside the copy. */
  readonly cli: string;
  remove(): Promise<void>;
}

export async function readableCopy(): Promise<ReadableCopy> {
  const root = await mkdtemp(join(tmpdir(), 'realmnet-readable-'));
  try {
    for (const s of SOURCES) await cp(join(REPO, s), join(root, s), { recursive: true });
    const modules = join(REPO, 'node_modules');
    for (const pkg of runtimePackages(modules)) {
      await cp(join(modules, pkg), join(root, 'node_modules', pkg), { recursive: true, dereference: false, verbatimSymlinks: true });
    }
    await openUp(root);
  } catch (e) {
    await rm(root, { recursive: true, force: true });
    throw e;
  }
  return { root, cli: join(root, 'bin', 'realmnet.js'), remove: () => rm(root, { recursive: true, force: true }) };
}

/** The top-level entries of node_modules (`name` or `@scope/name`) that package.json's dependencies need. */
function runtimePackages(modules: string): string[] {
  const top = new Set<string>();
  const seen = new Set<string>();
  const visit = (pkgDir: string): void => {
    if (seen.has(pkgDir)) return;
    seen.add(pkgDir);
    const json: unknown = JSON.parse(readFileSync(join(pkgDir, 'package.json'), 'utf8'));
    for (const dep of dependencyNames(json)) {
      const found = resolvePackage(pkgDir, dep, modules);
      if (found === null) continue; // an optional dependency for another platform, say
      const parts = relative(modules, found).split(sep);
      top.add(parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]);
      visit(found);
    }
  };
  visit(REPO);
  return [...top].sort();
}

function dependencyNames(json: unknown): string[] {
  if (typeof json !== 'object' || json === null) return [];
  const names: string[] = [];
  for (const key of ['dependencies', 'optionalDependencies', 'peerDependencies']) {
    const deps: unknown = Reflect.get(json, key);
    if (typeof deps === 'object' && deps !== null) names.push(...Object.keys(deps));
  }
  return names;
}

/** Node's lookup: `dep` in the nearest node_modules from `from` upwards, not above the repo's. */
function resolvePackage(from: string, dep: string, modules: string): string | null {
  for (let dir = from; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', dep);
    if (existsSync(join(candidate, 'package.json'))) return candidate;
    if (dir === REPO || dir === dirname(dir) || !dir.startsWith(REPO)) break;
  }
  const top = join(modules, dep);
  return existsSync(join(top, 'package.json')) ? top : null;
}

/** a+rX through the whole copy, whatever the umask and the checkout's own modes. */
async function openUp(path: string): Promise<void> {
  const s = await lstat(path);
  if (s.isSymbolicLink()) return; // chmod would follow it, maybe out of the copy
  if (s.isDirectory()) {
    await chmod(path, s.mode | 0o555);
    for (const name of await readdir(path)) await openUp(join(path, name));
  } else {
    await chmod(path, s.mode | 0o444 | (s.mode & 0o100 ? 0o111 : 0));
  }
}
