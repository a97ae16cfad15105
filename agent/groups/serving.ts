import type { Logger } from '../../shared/log.ts';
import type { NetConfig } from '../../shared/ip.ts';
import { readGroupFile } from '../../shared/groupfile.ts';
import type { RmLink } from '../rm/link.ts';
import type { GroupRouter } from './router.ts';

/**
 * Serving a user or data ID (slice 2, docs/slice2.md): for each binding file in the config's `serve`
 * list, the agent
 *   1. reads and verifies the owner's binding (shared/groupfile.ts) and checks it lists this host;
 *   2. puts the ID on the TUN device (a /128, no DAD), so local applications can accept on it, and
 *      replies to connections made to it leave with it as source;
 *   3. accepts packets addressed to it (router.serve);
 *   4. tells the RM it consents (SERVE with the binding, refreshed with its registration): only then
 *      does the RM offer this host for the ID.
 * A file that cannot be read or does not list this host is a config error at start (one line);
 * a refusal by the RM is logged with what to do, and the agent goes on serving what it can.
 */
export interface ServedStatus {
  readonly id: string;
  readonly kind: string;
  readonly name: string;
  readonly file: string;
  /** The RM's last answer: ok, notListed, notInRealm, …; 'pending' until it answers. */
  rm: string;
}

export interface ServingDeps {
  readonly net: NetConfig;
  readonly tunName: string;
  readonly router: GroupRouter;
  readonly link: RmLink;
  readonly hostId: string;
  readonly log: Logger;
}

export async function startServing(entries: readonly { readonly binding: string }[], deps: ServingDeps): Promise<ServedStatus[]> {
  const out: ServedStatus[] = [];
  for (const e of entries) {
    const g = readGroupFile(e.binding);
    const id = g.id.toString();
    if (!g.hosts.some((h) => h.hostId.toString() === deps.hostId)) {
      deps.log.warn(
        { id, file: e.binding, hostId: deps.hostId },
        `the ${g.kind} binding does not list this host: the RM will not offer it until the owner runs \`realmnet ${g.kind === 'user' ? 'user add-host' : 'data add-replica'} --host ${deps.hostId}\``,
      );
    }
    await deps.net.ip(['-6', 'addr', 'replace', `${id}/128`, 'dev', deps.tunName, 'nodad']);
    deps.router.serve(g.id);
    const st: ServedStatus = { id, kind: g.kind, name: g.name, file: e.binding, rm: 'pending' };
    out.push(st);
    deps.link.serve(g.id, g.bytes).then(
      (r) => {
        st.rm = r.status;
        if (r.status === 'ok') deps.log.info({ id, kind: g.kind }, `serving ${g.kind} ID`);
        else deps.log.warn({ id, kind: g.kind, status: r.status }, `the RM refused to offer this host for the ${g.kind} ID (${r.status})`);
      },
      (err: unknown) => {
        st.rm = 'error';
        deps.log.warn({ id, err: err instanceof Error ? err.message : String(err) }, 'serve registration failed; retried with the next registration refresh');
      },
    );
  }
  return out;
}
