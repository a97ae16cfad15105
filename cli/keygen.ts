import { Command } from 'commander';
import { deriveHostId, parsePrefix } from '../shared/ids.ts';
import { generateKeyPair } from '../shared/crypto/ed25519.ts';
import { saveKeyPair } from '../shared/keyfile.ts';

/**
 * `realmnet keygen --out FILE [--realm-prefix P]`: a new Ed25519 key pair in FILE (mode 0600). With a
 * realm prefix it prints the host ID this key has in that realm (prefix + hash of the public key).
 */
export function keygenCommand(): Command {
  return new Command('keygen')
    .summary('create an Ed25519 key pair (a host or RM identity)')
    .description(
      `Create an Ed25519 key pair and write it to FILE (JSON, mode 0600).

A host ID is self-certifying: the realm prefix followed by a hash of the public key. Give --realm-prefix to print the host ID this key has in that realm.`,
    )
    .requiredOption('-o, --out <file>', 'where to write the key (refuses to overwrite)')
    .option('-p, --realm-prefix <prefix>', 'realm prefix, e.g. fd00:1::/32: print the host ID of the key in it')
    .option('--force', 'overwrite FILE if it exists')
    .addHelpText('after', '\nExample:\n  realmnet keygen --out host.key --realm-prefix fd00:1::/32\n')
    .action((o: { out: string; realmPrefix?: string; force?: boolean }) => {
      // Parse the prefix first so that a typo does not leave a key file behind.
      const prefix = o.realmPrefix === undefined ? null : parsePrefix(o.realmPrefix);
      const kp = generateKeyPair();
      const hostId = prefix === null ? null : deriveHostId(prefix, kp.publicKey);
      saveKeyPair(o.out, kp, { overwrite: o.force === true });
      process.stdout.write(`key:        ${o.out}\npublic key: ${Buffer.from(kp.publicKey).toString('base64')}\n`);
      if (hostId !== null && prefix !== null) process.stdout.write(`host ID:    ${hostId.toString()}  (realm prefix ${prefix.toString()})\n`);
    });
}
