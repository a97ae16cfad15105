import { chmodSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { ConfigError } from './errors.ts';
import { decodeGroup, verifyGroup, type GroupBinding } from './group.ts';
import { MAX_ID_PREFIX_LEN } from './ids.ts';

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
    '# a listed host serves this ID only if its agent config lists this file under `serve:`',
    Buffer.from(g.bytes).toString('base64'),
    '',
  ];
  return lines.join('\n');
}

/**
 * Writes atomically (a temporary file in the same directory renamed over the old one), mode 0644
 * whatever the umask: the binding is public and signed, and an agent running as another user reads it.
 * A reader (an agent starting) sees the old binding or the new one, never half of one.
 */
export function writeGroupFile(path: string, g: GroupBinding): void {
  const tmp = `${path}.tmp-${process.pid}`;
  try {
    writeFileSync(tmp, formatGroupFile(g), { mode: 0o644 });
    chmodSync(tmp, 0o644);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(`cannot write the binding file ${path}: ${code ?? (e as Error).message}`, 'check that its directory exists and is writable');
  }
}

/** Reads and verifies a binding file. Throws ConfigError naming the file and what is wrong. */
export function readGroupFile(path: string): GroupBinding {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'not found' : code === 'EISDIR' ? 'is a directory' : code === 'EACCES' ? 'permission denied' : (code ?? (e as Error).message);
    const hint = code === 'ENOENT' ? 'create it with `realmnet user create` or `realmnet data publish`, or copy it from its owner' : 'check the path and its permissions';
    throw new ConfigError(`binding file ${path}: ${why}`, hint);
  }
  const body = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  if (body.length !== 1 || !/^[A-Za-z0-9+/]+={0,2}$/.test(body[0])) {
    throw new ConfigError(`binding file ${path} is not a realmnet user or data binding (expected one base64 line besides # comments)`, 'create it with `realmnet user create` or `realmnet data publish`');
  }
  const d = decodeGroup(Buffer.from(body[0], 'base64'));
  if (!d.ok) {
    const why = d.reason === 'badMagic' ? 'is not a user or data binding (a host binding, or another file?)' : d.reason === 'badField' ? 'holds a user or data binding with an invalid field' : 'holds a truncated or overlong user or data binding';
    throw new ConfigError(`binding file ${path} ${why} (${d.reason})`, 'it may be truncated or edited by hand: write it again with `realmnet user|data ...`');
  }
  const v = verifyGroup(d.group);
  if (!v.ok) {
    const why = { badSignature: "the owner's signature does not verify", idMismatch: "the ID does not belong to the owner's key", prefixTooLong: `the ID's prefix is longer than /${MAX_ID_PREFIX_LEN}` }[v.reason];
    throw new ConfigError(`binding file ${path}: ${why} (${v.reason})`, 'it was changed after it was signed: write it again with `realmnet user|data ...`, never by hand');
  }
  return d.group;
}
