import { HostId, Prefix, parseHostId, parsePrefix } from '../shared/ids.ts';
import type { Locator } from '../shared/binding.ts';
import type { LocatorPref } from '../shared/wire/messages.ts';
import type { RmConfig } from './config.ts';
import type { Realm } from './realm.ts';

/**
 * Realm policy: organisational control and location privacy.
 *
 * 1. Who may learn whose locators. Decided once per session from the asker's authenticated host ID
 *    (an AskerView), so a lookup costs one check, not a rule scan. A denied lookup is answered exactly
 *    like a lookup of an unknown ID (docs/control-protocol.md, "Location privacy").
 * 2. Preferences on the realm's hosts' uplinks (e.g. "ispb is backup only"), by uplink name. The
 *    host signs its binding, so the RM cannot edit it: it serves the signed binding unchanged plus a
 *    list of per-locator adjustments, which clients apply after verifying the binding.
 */

/** IDs and prefixes, matched against raw 16-byte IDs. */
class IdSet {
  private readonly prefixes: readonly Prefix[];
  private readonly ids: ReadonlySet<string>;

  constructor(items: readonly string[]) {
    const prefixes: Prefix[] = [];
    const ids = new Set<string>();
    for (const s of items) {
      if (s.includes('/')) prefixes.push(parsePrefix(s));
      else ids.add(parseHostId(s).key);
    }
    this.prefixes = prefixes;
    this.ids = ids;
  }

  /** key: the ID's 16 bytes as a latin1 string (the RM's map key). */
  has(id: HostId, key: string): boolean {
    if (this.ids.has(key)) return true;
    for (const p of this.prefixes) if (p.contains(id)) return true;
    return false;
  }

  /** True when a prefix of the set covers the whole of p (a foreign realm is matched as a whole). */
  coversPrefix(p: Prefix): boolean {
    for (const q of this.prefixes) if (q.covers(p)) return true;
    return false;
  }

  hasBytes(raw: Uint8Array, key: string): boolean {
    if (this.ids.has(key)) return true;
    for (const p of this.prefixes) if (p.contains(raw)) return true;
    return false;
  }
}

/** What one asker may see. */
export interface AskerView {
  /** raw: the target's 16 bytes; key: the same as a latin1 string. */
  mayLearn(raw: Uint8Array, key: string): boolean;
}

const ALL: AskerView = Object.freeze({ mayLearn: () => true });
const NONE: AskerView = Object.freeze({ mayLearn: () => false });

export type ClassName = 'static' | 'nomadic' | 'mobile';

export interface Policy {
  viewFor(asker: HostId): AskerView;
  /**
   * What another realm (the hierarchy: its RM asks for all its hosts) may see: everything when
   * policy.lookup.otherRealms is allow, else the targets of the rules whose askers cover its prefix.
   */
  viewForRealm(askerRealm: Prefix): AskerView;
  /** The customer class the operator set for a host (policy.classes, first match), or null: learn it. */
  classFor(raw: Uint8Array, key: string): ClassName | null;
  /** The adjustments for a binding's locators (empty when the policy says nothing about them). */
  prefsFor(locators: readonly Locator[]): readonly LocatorPref[];
}

/**
 * The policy the RM's parts hold: it forwards to the policy of the config in effect, which a reload
 * (SIGHUP) replaces in one assignment. Sessions keep the view they were given at HELLO; the reload
 * gives every live session its view under the new policy (SessionTable.refreshViews).
 */
export class ReloadablePolicy implements Policy {
  constructor(private inner: Policy) {}
  replace(next: Policy): void {
    this.inner = next;
  }
  viewFor(asker: HostId): AskerView {
    return this.inner.viewFor(asker);
  }
  viewForRealm(askerRealm: Prefix): AskerView {
    return this.inner.viewForRealm(askerRealm);
  }
  classFor(raw: Uint8Array, key: string): ClassName | null {
    return this.inner.classFor(raw, key);
  }
  prefsFor(locators: readonly Locator[]): readonly LocatorPref[] {
    return this.inner.prefsFor(locators);
  }
}

export const BACKUP_PRIORITY = 200;
const NO_PREFS: readonly LocatorPref[] = Object.freeze([]);

export function createPolicy(c: RmConfig['policy'], realm: Realm): Policy {
  const rules = c.lookup.rules.map((r) => ({ askers: new IdSet(r.askers), targets: new IdSet(r.targets) }));
  const sameRealm = c.lookup.sameRealm === 'allow';
  const uplinks = new Map(Object.entries(c.uplinks));
  const otherRealms = c.lookup.otherRealms === 'allow';
  const classes = c.classes.map((r) => ({ targets: new IdSet(r.targets), cls: r.class }));
  const viewOf = (targets: readonly IdSet[]): AskerView =>
    targets.length === 0
      ? NONE
      : Object.freeze({
          mayLearn(raw: Uint8Array, k: string): boolean {
            for (const t of targets) if (t.hasBytes(raw, k)) return true;
            return false;
          },
        });

  return {
    viewFor(asker: HostId): AskerView {
      if (sameRealm && realm.contains(asker)) return ALL;
      const key = asker.key;
      return viewOf(rules.filter((r) => r.askers.has(asker, key)).map((r) => r.targets));
    },

    viewForRealm(askerRealm: Prefix): AskerView {
      if (otherRealms) return ALL;
      return viewOf(rules.filter((r) => r.askers.coversPrefix(askerRealm)).map((r) => r.targets));
    },

    classFor(raw: Uint8Array, key: string): ClassName | null {
      for (const r of classes) if (r.targets.hasBytes(raw, key)) return r.cls;
      return null;
    },

    prefsFor(locators: readonly Locator[]): readonly LocatorPref[] {
      if (uplinks.size === 0) return NO_PREFS;
      const out: LocatorPref[] = [];
      locators.forEach((l, index) => {
        const u = uplinks.get(l.uplink);
        if (u === undefined) return;
        let priority = u.priority ?? l.priority;
        if (u.use === 'backup' && u.priority === undefined) priority = Math.max(priority, BACKUP_PRIORITY);
        const weight = u.weight ?? l.weight;
        const up = u.use !== 'never' && l.state === 'up';
        if (priority === l.priority && weight === l.weight && up === (l.state === 'up')) return;
        out.push(Object.freeze({ index, priority, weight, up }));
      });
      return out.length === 0 ? NO_PREFS : Object.freeze(out);
    },
  };
}
