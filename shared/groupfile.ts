import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { ConfigError } from './errors.ts';
import { decodeGroup, verifyGroup, type GroupBinding } from './group.ts';

/**
 * The on-disk form of a user or data binding (shared/group.ts): what `realmnet user|data ...` write
 * and what an agent's `serve:` list names. Text, so it can be mailed, diffed and read:
 *
 *   # realmnet user binding: signed by its owner; edit with `realmnet user ...`, never by hand
 *   # id: fd00:2:1::…   seq: …   hosts: fd00:1::… p1 w1, …
 *   <base64 of the signed bytes>
 *
 * Comment lines are for people and ignored; the one other line is the binding. Reading verifies it
 * (self-certifying ID, signature): a hand-edited or truncated file is refused with one clear line.
 */
export function formatGroupFile(g: GroupBinding): string {
  const what = g.kind === 'user' ? 'user' : 'data';
  const lines = [
    `# realmnet ${what} binding: signed by its owner; edit with \`realmnet ${what} ...\`, never by hand (it is signed)`,
    `# kind: ${g.kind}${g.kind === 'data' ? `   name: ${g.name}` : ''}`,
    `# id: ${g.id.toString()}`,
    `# seq: ${g.seq}   ttl: ${g.ttl} s`,
    ...(g.hosts.length === 0 ? ['# hosts: none yet'] : g.hosts.map((h) => `# host: ${h.hostId.toString()}  priority ${h.priority}  weight ${h.weight}`)),
    Buffer.from(g.bytes).toString('base64'),
    '',
  ];
  return lines.join('\n');
}

/** Writes atomically (a temporary file renamed over the old one), mode 0644. */
export function writeGroupFile(path: string, g: GroupBinding): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, formatGroupFile(g), { mode: 0o644 });
    renameSync(tmp, path);
  } catch (e) {
    throw new ConfigError(`cannot write the binding file ${path}: ${(e as Error).message}`, 'check that its directory exists and is writable');
  }
}

/** Reads and verifies a binding file. Throws ConfigError naming the file and what is wrong. */
export function readGroupFile(path: string): GroupBinding {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(`binding file ${path}: ${code === 'ENOENT' ? 'not found' : (e as Error).message}`, 'create it with `realmnet user create` or `realmnet data publish`');
  }
  const body = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (body.length !== 1 || !/^[A-Za-z0-9+/]+={0,2}$/.test(body[0])) {
    throw new ConfigError(`binding file ${path} is not a realmnet user or data binding (expected one base64 line besides # comments)`, 'create it with `realmnet user create` or `realmnet data publish`');
  }
  const d = decodeGroup(Buffer.from(body[0], 'base64'));
  if (!d.ok) throw new ConfigError(`binding file ${path} does not hold a valid user or data binding (${d.reason})`, 'it may be truncated or edited by hand: write it again with `realmnet user|data ...`');
  const v = verifyGroup(d.group);
  if (!v.ok) throw new ConfigError(`binding file ${path}: the owner's signature does not verify (${v.reason})`, 'it was changed after it was signed: write it again with `realmnet user|data ...`');
  return d.group;
}
