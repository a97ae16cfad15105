import { existsSync } from 'node:fs';
import { Command } from 'commander';
import { generateKeyPair, type KeyPair } from '../shared/crypto/ed25519.ts';
import { loadKeyPair, saveKeyPair } from '../shared/keyfile.ts';
import { Prefix, parseHostId, parsePrefix, MAX_ID_PREFIX_LEN, type HostId } from '../shared/ids.ts';
import { nextSeq } from '../shared/binding.ts';
import { signGroup, type GroupBinding, type GroupHost, type GroupKind, MAX_GROUP_TTL } from '../shared/group.ts';
import { readGroupFile, writeGroupFile } from '../shared/groupfile.ts';
import { RealmnetError, UsageError, isRealmnetError } from '../shared/errors.ts';
import { queryControl } from '../agent/control.ts';
import { DEFAULTS } from '../agent/config.ts';

/**
 * `realmnet user ...` and `realmnet data ...` (slice 2, docs/slice2.md): the owner's side of user and
 * data IDs. Each command that changes a binding signs a new one (a higher sequence number), writes
 * the binding file, and hands it to the local agent, which carries it to the Realm Manager
 * (`publish` on the agent's control socket). The hosts listed must also consent: each lists the
 * binding file under `serve:` in its agent config.
 *
 * Order of work in every command: validate all options, sign in memory, then write (key file first,
 * binding file second), then publish. A bad option leaves no file behind, and a failed publish
 * leaves the new binding on disk for `push`.
 */
const DEFAULT_TTL_S = 300;
/** The agent waits for the RM (retransmissions included) before it answers a publish. */
const PUBLISH_TIMEOUT_MS = 10_000;

interface Common {
  key: string;
  binding: string;
  socket: string;
  publish: boolean;
}

function byteOpt(name: string, v: string): number {
  const n = Number(v);
  if (!/^\d{1,3}$/.test(v) || n > 255) throw new UsageError(`--${name} ${v}: give a whole number from 0 to 255`);
  return n;
}

function ttlOpt(v: string | undefined): number {
  if (v === undefined) return DEFAULT_TTL_S;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < 1 || n > MAX_GROUP_TTL) throw new UsageError(`--ttl ${v}: give whole seconds from 1 to ${MAX_GROUP_TTL}`);
  return n;
}

function hostOpt(v: string): HostId {
  try {
    return parseHostId(v);
  } catch {
    throw new UsageError(`--host ${v}: not a host ID (an IPv6 address, e.g. fd00:1::8a3f:1c2d:9e0b:4a71; \`realmnet status\` on that host shows it)`);
  }
}

function prefixOpt(kind: GroupKind, v: string): Prefix {
  let p: Prefix;
  try {
    p = parsePrefix(v);
  } catch (e) {
    if (!isRealmnetError(e)) throw e;
    throw new UsageError(`--prefix ${e.message}`, e.hint);
  }
  if (p.length > MAX_ID_PREFIX_LEN) throw new UsageError(`--prefix ${v} is longer than /${MAX_ID_PREFIX_LEN}: ${kind} IDs need at least ${128 - MAX_ID_PREFIX_LEN} hash bits`);
  return p;
}

/** The owner's key, and whether it is new (not yet saved: the caller saves it once signing worked). */
function ownerKey(path: string, create: boolean): { key: KeyPair; fresh: boolean } {
  if (create && !existsSync(path)) return { key: generateKeyPair(), fresh: true };
  return { key: loadKeyPair(path), fresh: false };
}

/** The binding file, checked to be of this kind and signed by this key. */
function current(kind: GroupKind, file: string, key: KeyPair): GroupBinding {
  const g = readGroupFile(file);
  if (g.kind !== kind) throw new UsageError(`${file} is a ${g.kind} binding: use \`realmnet ${g.kind} ...\``);
  if (!Buffer.from(g.publicKey).equals(Buffer.from(key.publicKey))) {
    throw new UsageError(`${file} was signed by another key than the one given with --key: only its owner can change it`, 'give the key the binding was created with');
  }
  return g;
}

/** The agent's answer to `publish`: `{ ok: true, id, seq }` or `{ ok: false, error }`; anything else is a refusal. */
function publishAnswer(doc: unknown): { ok: true } | { ok: false; error: string } {
  if (typeof doc !== 'object' || doc === null) return { ok: false, error: 'the agent sent an unexpected answer' };
  if ('ok' in doc && doc.ok === true) return { ok: true };
  // An agent without slice 2 answers `{ error: 'unknown request "publish …"' }`.
  return { ok: false, error: 'error' in doc && typeof doc.error === 'string' ? doc.error : 'the agent refused it' };
}

async function publish(g: GroupBinding, file: string, o: { socket: string; publish: boolean }): Promise<void> {
  if (!o.publish) {
    process.stderr.write(`realmnet: written to ${file}, not published (--no-publish); publish it with \`realmnet ${g.kind} push --binding ${file}\`\n`);
    return;
  }
  const later = `publish it later with \`realmnet ${g.kind} push --binding ${file}\` where an agent with an RM runs`;
  let answer: unknown;
  try {
    answer = await queryControl(o.socket, `publish ${Buffer.from(g.bytes).toString('base64')}`, PUBLISH_TIMEOUT_MS);
  } catch (e) {
    throw new RealmnetError('PUBLISH_FAILED', `the binding was saved to ${file} but not published: ${e instanceof Error ? e.message : String(e)}`, later);
  }
  const a = publishAnswer(answer);
  if (!a.ok) throw new RealmnetError('PUBLISH_FAILED', `the binding was saved to ${file} but not published: ${a.error}`, `fix that, then ${later}`);
  process.stderr.write(`realmnet: published ${g.kind} binding seq ${g.seq} for ${g.id.toString()} through the agent on ${o.socket}\n`);
}

function describe(g: GroupBinding): string {
  const lines = [`${g.kind} ID: ${g.id.toString()}`, ...(g.kind === 'data' ? [`name:    ${g.name}`] : []), `seq:     ${g.seq}`, `ttl:     ${g.ttl} s`, `owner:   ${Buffer.from(g.publicKey).toString('base64')}`];
  if (g.hosts.length === 0) lines.push('hosts:   none yet');
  for (const h of g.hosts) lines.push(`host:    ${h.hostId.toString()}  priority ${h.priority}  weight ${h.weight}`);
  return lines.join('\n') + '\n';
}

function describeJson(g: GroupBinding): string {
  const doc = {
    kind: g.kind,
    id: g.id.toString(),
    prefix: Prefix.of(g.id.toBytes(), g.prefixLen).toString(),
    name: g.name,
    seq: g.seq,
    ttl: g.ttl,
    owner: Buffer.from(g.publicKey).toString('base64'),
    hosts: g.hosts.map((h) => ({ hostId: h.hostId.toString(), priority: h.priority, weight: h.weight })),
  };
  return JSON.stringify(doc, null, 2) + '\n';
}

function signNext(kind: GroupKind, key: KeyPair, old: GroupBinding, hosts: readonly GroupHost[]): GroupBinding {
  return signGroup(key, { kind, prefix: Prefix.of(old.id.toBytes(), old.prefixLen), name: old.name, hosts, seq: nextSeq(old.seq), ttl: old.ttl });
}

function withCommon(c: Command, create = false): Command {
  return c
    .requiredOption('-k, --key <file>', create ? "the owner's Ed25519 key (created, mode 0600, if it does not exist)" : "the owner's Ed25519 key (the one that signed the binding)")
    .requiredOption('-b, --binding <file>', 'the binding file')
    .option('-s, --socket <path>', 'control socket of the local agent that carries the binding to the RM', DEFAULTS.control.socket)
    .option('--no-publish', 'only write the binding file (publish it later with push)');
}

const CONSENT = `A listed host serves the ID only with its own consent: on that host, list the binding file under \`serve:\` in the agent config (copy the file there: it is public and signed).`;

function kindCommand(kind: GroupKind): Command {
  const isUser = kind === 'user';
  const add = isUser ? 'add-host' : 'add-replica';
  const remove = isUser ? 'remove-host' : 'remove-replica';
  const ex = isUser
    ? { key: 'alice.key', file: 'alice.user', prefix: 'fd00:2:1::/48', create: 'realmnet user create --prefix fd00:2:1::/48 --key alice.key --binding alice.user' }
    : { key: 'pub.key', file: 'file.data', prefix: 'fd00:2:2::/48', create: 'realmnet data publish --prefix fd00:2:2::/48 --key pub.key --name site/file.bin --binding file.data' };
  const cmd = new Command(kind)
    .summary(isUser ? 'user IDs: one ID for a person, bound to the hosts she owns (slice 2)' : 'data IDs: one ID for a piece of data, bound to the hosts with a replica (slice 2)')
    .description(
      isUser
        ? `A user ID is an IPv6-shaped ID derived from the user's key under the realm's user prefix (the RM's slice2.userPrefix). Its binding, signed by that key, lists her hosts with a priority (lower first) and a weight. A connection to the user ID reaches her present host of lowest priority; if that host goes away, new connections go to the next (docs/slice2.md).

A host serves a user ID only with its own consent: list the binding file under \`serve:\` in that host's agent config. Changes are published through the local agent (its control socket) to the Realm Manager.`
        : `A data ID is an IPv6-shaped ID derived from the publisher's key and the data's name under the realm's data prefix (the RM's slice2.dataPrefix). Its binding, signed by the publisher, lists the hosts keeping a replica. A connection to the data ID reaches the live replica with the lowest measured round-trip time (weights break ties); if it dies, new connections go to another (docs/slice2.md).

A host serves a data ID only with its own consent: list the binding file under \`serve:\` in that host's agent config. Changes are published through the local agent (its control socket) to the Realm Manager.`,
    )
    .addHelpText(
      'after',
      isUser
        ? `
Example:
  ${ex.create}
  realmnet user add-host --key alice.key --binding alice.user --host fd00:1::8a3f:1c2d:9e0b:4a71 --priority 1
  realmnet user add-host --key alice.key --binding alice.user --host fd00:1::77c1:e2a0:51d9:3b04 --priority 2
  # on each of those hosts, in the agent config:  serve: [{ binding: /etc/realmnet/alice.user }]`
        : `
Example:
  ${ex.create}
  realmnet data add-replica --key pub.key --binding file.data --host fd00:1::8a3f:1c2d:9e0b:4a71
  # on each replica host, in the agent config:  serve: [{ binding: /etc/realmnet/file.data }]`,
    );

  // create (user) / publish (data)
  const createName = isUser ? 'create' : 'publish';
  const create = new Command(createName)
    .summary(isUser ? 'create a user ID and its (empty) binding' : 'create a data ID for NAME and its (empty) binding')
    .description(
      `${isUser ? "Create a user ID: the realm's user prefix followed by a hash of the owner's key" : "Create a data ID: the realm's data prefix followed by a hash of the publisher's key and the data's name"}. Signs a binding that lists no hosts yet, writes it to the binding file and publishes it; prints the ID (only the ID, on stdout). The key file is created (mode 0600) if it does not exist: keep it, it alone can change the binding.

Then list hosts with \`realmnet ${kind} ${add}\`. ${CONSENT}`,
    )
    .requiredOption('-p, --prefix <prefix>', `the realm's ${kind} prefix (the RM's slice2.${kind}Prefix, at most /${MAX_ID_PREFIX_LEN}), e.g. ${ex.prefix}`);
  if (!isUser) create.requiredOption('-n, --name <name>', "the data's name (1-64 of A-Z a-z 0-9 . _ / + -): part of the data ID");
  withCommon(create, true)
    .option('--ttl <seconds>', `how long holders may cache the binding, 1-${MAX_GROUP_TTL}`, String(DEFAULT_TTL_S))
    .option('--force', 'overwrite an existing binding file (its host list is lost)')
    .addHelpText('after', `\nExample:\n  ${ex.create}\n`)
    .action(async (o: Common & { prefix: string; ttl?: string; force?: boolean; name?: string }) => {
      const prefix = prefixOpt(kind, o.prefix);
      const ttl = ttlOpt(o.ttl);
      if (existsSync(o.binding) && o.force !== true) throw new UsageError(`${o.binding} exists: give --force to replace it (its hosts would be lost)`);
      const { key, fresh } = ownerKey(o.key, true);
      let g: GroupBinding;
      try {
        g = signGroup(key, { kind, prefix, name: o.name, hosts: [], seq: nextSeq(0), ttl });
      } catch (e) {
        // A bad --name (the only input signGroup still checks): a usage mistake, one line.
        if (isRealmnetError(e) && e.code === 'BINDING_INVALID') throw new UsageError(`--name: ${e.message.replace(/^group binding: /, '')}`);
        throw e;
      }
      if (fresh) {
        saveKeyPair(o.key, key);
        process.stderr.write(`realmnet: created the owner key ${o.key} (mode 0600): keep it safe, it alone can change this binding\n`);
      }
      writeGroupFile(o.binding, g);
      process.stdout.write(`${g.id.toString()}\n`);
      process.stderr.write(`realmnet: ${kind} ID ${g.id.toString()} written to ${o.binding}; next: realmnet ${kind} ${add} --key ${o.key} --binding ${o.binding} --host HOST_ID\n`);
      await publish(g, o.binding, o);
    });
  cmd.addCommand(create);

  // add-host / add-replica
  const addCmd = new Command(add)
    .summary(isUser ? 'list a host of the user (or change its priority/weight)' : 'list a replica host (or change its weight)')
    .description(
      `${
        isUser
          ? 'List a host (by its host ID) as one of the user\'s hosts, with a priority (lower is tried first; 255 = never) and a weight (share among hosts of equal priority). A host already listed gets the new priority and weight.'
          : 'List a host (by its host ID) as keeping a replica of the data. Replicas all have priority 1: the fastest live one is chosen, and the weight breaks ties. A host already listed gets the new weight.'
      } Re-signs the binding with a higher sequence number, writes the file and publishes it.

${CONSENT}`,
    )
    .requiredOption('-H, --host <hostId>', 'the host ID to list (`realmnet status` on that host shows it)');
  if (isUser) addCmd.option('--priority <n>', 'lower is tried first, 0-255 (255: never)', '1');
  withCommon(addCmd)
    .option('--weight <n>', isUser ? 'share among hosts of equal priority, 0-255' : 'tie-break among equally fast replicas, 0-255', '1')
    .addHelpText('after', `\nExample:\n  realmnet ${kind} ${add} --key ${ex.key} --binding ${ex.file} --host fd00:1::8a3f:1c2d:9e0b:4a71${isUser ? ' --priority 1' : ''}\n`)
    .action(async (o: Common & { host: string; priority?: string; weight: string }) => {
      const host = hostOpt(o.host);
      const priority = isUser ? byteOpt('priority', o.priority ?? '1') : 1;
      const weight = byteOpt('weight', o.weight);
      const { key } = ownerKey(o.key, false);
      const old = current(kind, o.binding, key);
      const listed = old.hosts.some((h) => h.hostId.equals(host));
      // Replacing keeps the host's place in the list; a new host goes last.
      const hosts = listed ? old.hosts.map((h) => (h.hostId.equals(host) ? { hostId: host, priority, weight } : h)) : [...old.hosts, { hostId: host, priority, weight }];
      const g = signNext(kind, key, old, hosts);
      writeGroupFile(o.binding, g);
      process.stdout.write(describe(g));
      await publish(g, o.binding, o);
    });
  cmd.addCommand(addCmd);

  // remove-host / remove-replica
  const removeCmd = new Command(remove)
    .summary(isUser ? 'take a host off the user' : 'take a replica host off the data')
    .description(`Take a host off the binding. Re-signs it with a higher sequence number, writes the file and publishes it: the RM stops offering the host (new connections go elsewhere). The host may also drop the file from its \`serve:\` list.`)
    .requiredOption('-H, --host <hostId>', 'the host ID to remove');
  withCommon(removeCmd)
    .addHelpText('after', `\nExample:\n  realmnet ${kind} ${remove} --key ${ex.key} --binding ${ex.file} --host fd00:1::8a3f:1c2d:9e0b:4a71\n`)
    .action(async (o: Common & { host: string }) => {
      const host = hostOpt(o.host);
      const { key } = ownerKey(o.key, false);
      const old = current(kind, o.binding, key);
      if (!old.hosts.some((h) => h.hostId.equals(host))) throw new UsageError(`${host.toString()} is not listed in ${o.binding}`, `\`realmnet ${kind} show --binding ${o.binding}\` lists its hosts`);
      const g = signNext(kind, key, old, old.hosts.filter((h) => !h.hostId.equals(host)));
      writeGroupFile(o.binding, g);
      process.stdout.write(describe(g));
      await publish(g, o.binding, o);
    });
  cmd.addCommand(removeCmd);

  cmd.addCommand(
    new Command('push')
      .summary('publish an existing binding file through the local agent (e.g. after --no-publish)')
      .description('Publish the binding file as it is (no re-signing) through the local agent to the Realm Manager: after --no-publish, or when publishing failed.')
      .requiredOption('-b, --binding <file>', 'the binding file')
      .option('-s, --socket <path>', 'control socket of the local agent', DEFAULTS.control.socket)
      .addHelpText('after', `\nExample:\n  realmnet ${kind} push --binding ${ex.file}\n`)
      .action(async (o: { binding: string; socket: string }) => {
        const g = readGroupFile(o.binding);
        if (g.kind !== kind) throw new UsageError(`${o.binding} is a ${g.kind} binding: use \`realmnet ${g.kind} push\``);
        await publish(g, o.binding, { socket: o.socket, publish: true });
      }),
  );

  cmd.addCommand(
    new Command('show')
      .summary('print a binding file')
      .description('Print a binding file (after checking its signature): the ID, name, sequence number, owner key and hosts.')
      .requiredOption('-b, --binding <file>', 'the binding file')
      .option('--json', 'as JSON (for scripts)')
      .action((o: { binding: string; json?: boolean }) => {
        const g = readGroupFile(o.binding);
        process.stdout.write(o.json === true ? describeJson(g) : describe(g));
      }),
  );
  return cmd;
}

export function userCommand(): Command {
  return kindCommand('user');
}

export function dataCommand(): Command {
  return kindCommand('data');
}
