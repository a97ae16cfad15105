import { existsSync } from 'node:fs';
import { Command, Option } from 'commander';
import { generateKeyPair, type KeyPair } from '../shared/crypto/ed25519.ts';
import { loadKeyPair, saveKeyPair } from '../shared/keyfile.ts';
import { Prefix, parseHostId, parsePrefix, MAX_ID_PREFIX_LEN, type HostId } from '../shared/ids.ts';
import { nextSeq } from '../shared/binding.ts';
import { signGroup, type GroupBinding, type GroupHost, type GroupKind, MAX_GROUP_TTL } from '../shared/group.ts';
import { readGroupFile, writeGroupFile } from '../shared/groupfile.ts';
import { RealmnetError, UsageError } from '../shared/errors.ts';
import { queryControl } from '../agent/control.ts';
import { DEFAULTS } from '../agent/config.ts';

/**
 * `realmnet user ...` and `realmnet data ...` (slice 2, docs/slice2.md): the owner's side of user and
 * data IDs. Each command that changes a binding signs a new one (a higher sequence number), writes
 * the binding file, and hands it to the local agent, which carries it to the Realm Manager
 * (`publish` on the agent's control socket). The hosts listed must also consent: each lists the
 * binding file under `serve:` in its agent config.
 */
const DEFAULT_TTL_S = 300;

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
  if (!Number.isInteger(n) || n < 1 || n > MAX_GROUP_TTL) throw new UsageError(`--ttl ${v}: give seconds from 1 to ${MAX_GROUP_TTL}`);
  return n;
}

function hostOpt(v: string): HostId {
  try {
    return parseHostId(v);
  } catch {
    throw new UsageError(`--host ${v}: not a host ID (an IPv6 address, e.g. fd00:1::8a3f:1c2d:9e0b:4a71; \`realmnet status\` on that host shows it)`);
  }
}

function prefixOpt(v: string): ReturnType<typeof parsePrefix> {
  const p = parsePrefix(v);
  if (p.length > MAX_ID_PREFIX_LEN) throw new UsageError(`--prefix ${v} is longer than /${MAX_ID_PREFIX_LEN}: IDs need at least 64 hash bits`);
  return p;
}

/** The owner's key: loaded, or created (mode 0600) when `create` and the file does not exist. */
function ownerKey(path: string, create: boolean): KeyPair {
  if (create && !existsSync(path)) {
    const kp = generateKeyPair();
    saveKeyPair(path, kp);
    process.stderr.write(`realmnet: created the owner key ${path} (mode 0600): keep it safe, it alone can change this binding\n`);
    return kp;
  }
  return loadKeyPair(path);
}

/** The binding file, checked to be of this kind and signed by this key. */
function current(kind: GroupKind, file: string, key: KeyPair): GroupBinding {
  const g = readGroupFile(file);
  if (g.kind !== kind) throw new UsageError(`${file} is a ${g.kind} binding: use \`realmnet ${g.kind} ...\``);
  if (!Buffer.from(g.publicKey).equals(Buffer.from(key.publicKey))) throw new UsageError(`${file} was signed by another key than the one given with --key: only its owner can change it`);
  return g;
}

async function publish(g: GroupBinding, file: string, o: { socket: string; publish: boolean }): Promise<void> {
  if (!o.publish) {
    process.stderr.write(`realmnet: written to ${file}, not published (--no-publish)\n`);
    return;
  }
  let answer: unknown;
  try {
    answer = await queryControl(o.socket, `publish ${Buffer.from(g.bytes).toString('base64')}`, 10_000);
  } catch (e) {
    throw new RealmnetError('PUBLISH_FAILED', `the binding was saved to ${file} but not published: ${e instanceof Error ? e.message : String(e)}`, `publish it later with \`realmnet ${g.kind} push --binding ${file}\` where an agent with an RM runs`);
  }
  const a = answer as { ok?: boolean; error?: string; seq?: number };
  if (a.ok !== true) {
    throw new RealmnetError('PUBLISH_FAILED', `the binding was saved to ${file} but not published: ${a.error ?? 'the agent refused it'}`, `fix that, then \`realmnet ${g.kind} push --binding ${file}\``);
  }
  process.stderr.write(`realmnet: published ${g.kind} binding seq ${g.seq} for ${g.id.toString()} through the agent on ${o.socket}\n`);
}

function describe(g: GroupBinding): string {
  const lines = [`${g.kind} ID: ${g.id.toString()}`, ...(g.kind === 'data' ? [`name:    ${g.name}`] : []), `seq:     ${g.seq}`, `ttl:     ${g.ttl} s`, `owner:   ${Buffer.from(g.publicKey).toString('base64')}`];
  if (g.hosts.length === 0) lines.push('hosts:   none yet');
  for (const h of g.hosts) lines.push(`host:    ${h.hostId.toString()}  priority ${h.priority}  weight ${h.weight}`);
  return lines.join('\n') + '\n';
}

function signNext(kind: GroupKind, key: KeyPair, old: GroupBinding, hosts: readonly GroupHost[]): GroupBinding {
  return signGroup(key, { kind, prefix: Prefix.of(old.id.toBytes(), old.prefixLen), name: old.name, hosts, seq: nextSeq(old.seq), ttl: old.ttl });
}

function withCommon(c: Command, create = false): Command {
  return c
    .requiredOption('-k, --key <file>', create ? "the owner's Ed25519 key (created, mode 0600, if it does not exist)" : "the owner's Ed25519 key (the one that signed the binding)")
    .requiredOption('-b, --binding <file>', 'the binding file')
    .option('-s, --socket <path>', 'control socket of the local agent that carries the binding to the RM', DEFAULTS.control.socket)
    .option('--no-publish', 'only write the binding file');
}

function kindCommand(kind: GroupKind): Command {
  const isUser = kind === 'user';
  const add = isUser ? 'add-host' : 'add-replica';
  const remove = isUser ? 'remove-host' : 'remove-replica';
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
  realmnet user create --prefix fd00:2:1::/48 --key alice.key --binding alice.user
  realmnet user add-host --key alice.key --binding alice.user --host fd00:1::8a3f:1c2d:9e0b:4a71 --priority 1
  realmnet user add-host --key alice.key --binding alice.user --host fd00:1::77c1:e2a0:51d9:3b04 --priority 2
  # on each of those hosts, in the agent config:  serve: [{ binding: /etc/realmnet/alice.user }]`
        : `
Example:
  realmnet data publish --prefix fd00:2:2::/48 --key pub.key --name site/file.bin --binding file.data
  realmnet data add-replica --key pub.key --binding file.data --host fd00:1::8a3f:1c2d:9e0b:4a71
  # on each replica host, in the agent config:  serve: [{ binding: /etc/realmnet/file.data }]`,
    );

  const createName = isUser ? 'create' : 'publish';
  const create = withCommon(new Command(createName), true)
    .summary(isUser ? 'create a user ID and its (empty) binding' : 'create a data ID for NAME and its (empty) binding')
    .requiredOption('-p, --prefix <prefix>', `the realm's ${kind} prefix (the RM's slice2.${kind}Prefix), e.g. ${isUser ? 'fd00:2:1::/48' : 'fd00:2:2::/48'}`)
    .option('--ttl <seconds>', 'how long holders may cache the binding', String(DEFAULT_TTL_S))
    .option('--force', 'overwrite an existing binding file');
  if (!isUser) create.requiredOption('-n, --name <name>', 'the data\'s name (1-64 of A-Z a-z 0-9 . _ / + -): part of the data ID');
  create.action(async (o: Common & { prefix: string; ttl?: string; force?: boolean; name?: string }) => {
    const prefix = prefixOpt(o.prefix);
    const ttl = ttlOpt(o.ttl);
    if (existsSync(o.binding) && o.force !== true) throw new UsageError(`${o.binding} exists: give --force to replace it (its hosts would be lost)`);
    const key = ownerKey(o.key, true);
    const g = signGroup(key, { kind, prefix, name: o.name, hosts: [], seq: nextSeq(0), ttl });
    writeGroupFile(o.binding, g);
    process.stdout.write(`${g.id.toString()}\n`);
    process.stderr.write(`realmnet: ${kind} ID ${g.id.toString()} written to ${o.binding}; next: realmnet ${kind} ${add} --key ${o.key} --binding ${o.binding} --host HOST_ID\n`);
    await publish(g, o.binding, o);
  });
  cmd.addCommand(create);

  const addCmd = withCommon(new Command(add))
    .summary(isUser ? 'list a host of the user (or change its priority/weight)' : 'list a replica host (or change its weight)')
    .requiredOption('-H, --host <hostId>', 'the host ID to list')
    .option('--weight <n>', 'share among equals, 0-255', '1');
  if (isUser) addCmd.option('--priority <n>', 'lower is tried first, 0-254 (255: never)', '1');
  addCmd.action(async (o: Common & { host: string; priority?: string; weight: string }) => {
    const host = hostOpt(o.host);
    const priority = isUser ? byteOpt('priority', o.priority ?? '1') : 1;
    const weight = byteOpt('weight', o.weight);
    const key = ownerKey(o.key, false);
    const old = current(kind, o.binding, key);
    const hosts = [...old.hosts.filter((h) => !h.hostId.equals(host)), { hostId: host, priority, weight }];
    const g = signNext(kind, key, old, hosts);
    writeGroupFile(o.binding, g);
    process.stdout.write(describe(g));
    await publish(g, o.binding, o);
  });
  cmd.addCommand(addCmd);

  const removeCmd = withCommon(new Command(remove))
    .summary(isUser ? 'take a host off the user' : 'take a replica host off the data')
    .requiredOption('-H, --host <hostId>', 'the host ID to remove')
    .action(async (o: Common & { host: string }) => {
      const host = hostOpt(o.host);
      const key = ownerKey(o.key, false);
      const old = current(kind, o.binding, key);
      if (!old.hosts.some((h) => h.hostId.equals(host))) throw new UsageError(`${host.toString()} is not listed in ${o.binding}`);
      const g = signNext(kind, key, old, old.hosts.filter((h) => !h.hostId.equals(host)));
      writeGroupFile(o.binding, g);
      process.stdout.write(describe(g));
      await publish(g, o.binding, o);
    });
  cmd.addCommand(removeCmd);

  cmd.addCommand(
    new Command('push')
      .summary('publish an existing binding file through the local agent (e.g. after --no-publish)')
      .requiredOption('-b, --binding <file>', 'the binding file')
      .option('-s, --socket <path>', 'control socket of the local agent', DEFAULTS.control.socket)
      .action(async (o: { binding: string; socket: string }) => {
        const g = readGroupFile(o.binding);
        if (g.kind !== kind) throw new UsageError(`${o.binding} is a ${g.kind} binding: use \`realmnet ${g.kind} push\``);
        await publish(g, o.binding, { socket: o.socket, publish: true });
      }),
  );

  cmd.addCommand(
    new Command('show')
      .summary('print a binding file')
      .requiredOption('-b, --binding <file>', 'the binding file')
      .addOption(new Option('--json', 'as JSON'))
      .action((o: { binding: string; json?: boolean }) => {
        const g = readGroupFile(o.binding);
        if (o.json === true) {
          const doc = { kind: g.kind, id: g.id.toString(), name: g.name, seq: g.seq, ttl: g.ttl, owner: Buffer.from(g.publicKey).toString('base64'), hosts: g.hosts.map((h) => ({ hostId: h.hostId.toString(), priority: h.priority, weight: h.weight })) };
          process.stdout.write(JSON.stringify(doc, null, 2) + '\n');
        } else process.stdout.write(describe(g));
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
