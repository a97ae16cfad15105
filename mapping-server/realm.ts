import { HostId, Prefix, parsePrefix } from '../shared/ids.ts';
import type { RmConfig } from './config.ts';

/**
 * The realm this RM manages: its name, its ID prefix and the sub-realms nested inside it. A host ID
 * belongs here when the prefix it was derived under (the binding's prefix length) is exactly the
 * realm's prefix or one of the sub-realms': the hash part then starts where the realm says, so a
 * host cannot shorten its hash by claiming a longer prefix than its realm hands out.
 */
export interface SubRealm {
  readonly name: string;
  readonly prefix: Prefix;
}

export class Realm {
  readonly name: string;
  readonly prefix: Prefix;
  readonly subRealms: readonly SubRealm[];
  /** Every prefix a host ID of this realm may be derived under, longest first. */
  private readonly prefixes: readonly Prefix[];

  constructor(name: string, prefix: Prefix, subRealms: readonly SubRealm[] = []) {
    this.name = name;
    this.prefix = prefix;
    this.subRealms = Object.freeze(subRealms.slice());
    this.prefixes = Object.freeze([prefix, ...subRealms.map((s) => s.prefix)].sort((a, b) => b.length - a.length));
    Object.freeze(this);
  }

  static fromConfig(c: RmConfig): Realm {
    return new Realm(
      c.realm,
      parsePrefix(c.prefix),
      c.subRealms.map((s) => Object.freeze({ name: s.name, prefix: parsePrefix(s.prefix) })),
    );
  }

  /** True when id lies inside the realm prefix (sub-realms included). */
  contains(id: HostId): boolean {
    return this.prefix.contains(id);
  }

  /** True when a binding for id derived under a prefix of length prefixLen may be registered here. */
  accepts(id: HostId, prefixLen: number): boolean {
    for (const p of this.prefixes) if (p.length === prefixLen && p.contains(id)) return true;
    return false;
  }

  /** The realm or sub-realm name id falls in (the most specific one), for logs and status. */
  nameOf(id: HostId): string | undefined {
    for (const p of this.prefixes) {
      if (!p.contains(id)) continue;
      if (p === this.prefix) return this.name;
      return this.subRealms.find((s) => s.prefix === p)?.name;
    }
    return undefined;
  }
}
