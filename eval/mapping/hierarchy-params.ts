/**
 * Every number the mapping-hierarchy simulation starts from, each with where it comes from, so
 * that trying another assumption is a one-line change. docs/mapping-hierarchy.md repeats them in
 * a table. "Assumption" marks a value no measurement pins down; the rest cite their source.
 */
import { DEFAULTS as RM_DEFAULTS } from '../../mapping-server/config.ts';
import { MsgType, type MsgTypeName } from '../../shared/wire/messages.ts';

export const HOUR_S = 3_600;
export const DAY_S = 24 * HOUR_S;

/** Customer classes by index: typed arrays hold the index, reports the name. */
export const STATIC = 0;
export const NOMADIC = 1;
export const MOBILE = 2;
export const CLASS_NAMES = ['static', 'nomadic', 'mobile'] as const;
export type ClassIndex = typeof STATIC | typeof NOMADIC | typeof MOBILE;

export interface NomadicPeriod {
  readonly hours: number;
  readonly share: number;
}

export interface MappingParams {
  readonly seed: number;
  readonly hosts: number;
  /** The measured window. */
  readonly hours: number;
  /** Simulated before the window and not counted, so caches start warm (see warmupHours below). */
  readonly warmupHours: number;
  /** One top RM, `middles` middle RMs, `bottoms` bottom (site) RMs; hosts spread evenly over bottoms. */
  readonly bottoms: number;
  readonly middles: number;
  /** Shares of hosts per class: static, nomadic, mobile. */
  readonly classMix: readonly [number, number, number];
  readonly nomadicPeriods: readonly NomadicPeriod[];
  /** Mobile and multihomed hosts alternate: on the primary uplink, then failed over to a backup, then back. */
  readonly mobilePrimaryMeanS: number;
  readonly mobileBackupMeanS: number;
  readonly lookupsPerHostHour: number;
  readonly zipfS: number;
  /** One-way delay of one RM-to-RM message. */
  readonly rmHopS: number;
  readonly referralTtlS: number;
  readonly pullTtlS: number;
  readonly cacheTtlS: number;
  readonly staticTtlS: number;
  readonly nomadicTtlS: number;
  /** How long a follow (subscription at the home RM) lasts without being renewed. */
  readonly followLeaseS: number;
  /** A lookup that hits a followed binding renews the follow once this share of the lease has passed. */
  readonly followRenewAfter: number;
  /** The class a learning home RM gives a host it has not yet seen enough of. */
  readonly learnFallback: 'static' | 'nomadic' | 'mobile';
}

/**
 * Sources (full references in docs/mapping-hierarchy.md):
 * - hierarchy 1 / 10 / 1,000 RMs and 1,000 hosts per site: the scenario (paper Fig. 6).
 * - classMix 60/30/10: Argon et al. 2010 (DIMES agents) found over 60% of end hosts keep a fixed
 *   address for two months and the rest mostly renumbered with a median period of ~24 h; we give
 *   the mobile/multihomed hosts that fail over 10%. The split of the non-static 40% is an assumption.
 * - nomadicPeriods: Padmanabhan et al., "Reasons Dynamic Addresses Change" (IMC 2016): ISPs that
 *   renumber periodically do so after a fixed period, typically a multiple of 24 h; Argon et al.
 *   2010 and Moura et al. 2015 (DHCP churn) likewise see ~24 h. The 12 h / 48 h shares are assumptions.
 * - mobile 30 min on the primary, 10 min on the backup (3 changes an hour): an assumption ("a few
 *   failovers an hour, each with a return"); no study gives a rate for overlay hosts.
 * - zipfS 0.9: web and DNS popularity is Zipf-like with exponents 0.6-1.0 (Breslau et al. 1999;
 *   Cunha et al. 1995; Jung et al. 2002 for DNS names); 0.9 sits in that range.
 * - lookupsPerHostHour 2: an assumption sized so that 1M hosts x 24 h make 48M lookups (the issue
 *   asks for tens of millions): each host starts two conversations an hour with an overlay host
 *   it holds no binding for.
 * - rmHopS 20 ms: an assumption (a one-way delay within a continent).
 * - referralTtlS 24 h: LISP-DDT's referral TTL (RFC 8111); our RM's default is 1 h
 *   (mapping-server/config.ts), which only adds a few referral steps per site and hour.
 * - pullTtlS 60 s: LISP map-cache studies find a 60 s timeout already gives high hit ratios
 *   (Kim, Iannone, Feldmann 2011); it is also our RM's mobile TTL.
 * - cacheTtlS 24 h: DNS-style long TTLs (and resolvers that stretch them).
 * - staticTtlS 6 h: "cached for hours" (DESIGN.md section 5); static locators are stable for months.
 * - nomadicTtlS 300 s: our RM's nomadic TTL (mapping-server/config.ts); Jung et al. 2002 find TTLs
 *   of a few hundred seconds barely lower DNS hit rates.
 * - followLeaseS 600 s, renew after a third: an assumption in the spirit of our RM, whose follow
 *   lasts three TTLs and is re-asked in the last third while the site's hosts use the binding.
 * - learnFallback: our RM's hierarchy.defaultClass.
 */
export const DEFAULT_PARAMS: MappingParams = Object.freeze<MappingParams>({
  seed: 1,
  hosts: 1_000_000,
  hours: 24,
  warmupHours: 6,
  bottoms: 1_000,
  middles: 10,
  classMix: [0.6, 0.3, 0.1],
  nomadicPeriods: [
    { hours: 24, share: 0.8 },
    { hours: 12, share: 0.1 },
    { hours: 48, share: 0.1 },
  ],
  mobilePrimaryMeanS: 30 * 60,
  mobileBackupMeanS: 10 * 60,
  lookupsPerHostHour: 2,
  zipfS: 0.9,
  rmHopS: 0.02,
  referralTtlS: DAY_S,
  pullTtlS: 60,
  cacheTtlS: DAY_S,
  staticTtlS: 6 * HOUR_S,
  nomadicTtlS: RM_DEFAULTS.hierarchy.classes.nomadic.ttlS,
  followLeaseS: 600,
  followRenewAfter: 1 / 3,
  learnFallback: RM_DEFAULTS.hierarchy.defaultClass,
});

/** Hosts per site RM and site RMs per middle RM: smaller runs keep the shape of the full one. */
export const HOSTS_PER_BOTTOM = 1_000;
export const BOTTOMS_PER_MIDDLE = 100;

/** The hierarchy for a run of `hosts` hosts with the full run's shape (1,000 hosts a site, 100 sites a middle). */
export function scaledHierarchy(hosts: number): { bottoms: number; middles: number } {
  const bottoms = Math.max(1, Math.round(hosts / HOSTS_PER_BOTTOM));
  return { bottoms, middles: Math.max(1, Math.round(bottoms / BOTTOMS_PER_MIDDLE)) };
}

/**
 * Message costs, from the real protocol (shared/wire/messages.ts, docs/control-protocol.md): every
 * exchange is a request and its answer, so 2 messages, each handled by both RMs involved.
 */
export const MESSAGE_KINDS = ['siteLookup', 'register', 'referral', 'query', 'follow', 'revalidate', 'push'] as const;
export type MessageKind = (typeof MESSAGE_KINDS)[number];
export const SITE_LOOKUP = 0;
export const REGISTER = 1;
export const REFERRAL = 2;
export const QUERY = 3;
export const FOLLOW = 4;
export const REVALIDATE = 5;
export const PUSH = 6;

interface Exchange {
  readonly messages: number;
  readonly wire: readonly [MsgTypeName, MsgTypeName];
  readonly what: string;
}

export const EXCHANGES: Record<MessageKind, Exchange> = {
  siteLookup: { messages: 2, wire: ['lookup', 'lookupReply'], what: 'a host asks its own site RM (every lookup, in every strategy)' },
  register: { messages: 2, wire: ['register', 'registerReply'], what: 'a host registers a changed binding at its home RM' },
  referral: { messages: 2, wire: ['rmQuery', 'rmAnswer'], what: 'a referral step at the top or a middle RM (RM-ANSWER kind referral)' },
  query: { messages: 2, wire: ['rmQuery', 'rmAnswer'], what: 'the binding from the home RM (RM-ANSWER kind binding)' },
  // Our protocol carries follow as a flag of the RM-QUERY that fetches the binding, so this
  // exchange costs nothing extra on the wire; counting 2 is the (conservative) figure.
  follow: { messages: 2, wire: ['rmQuery', 'rmAnswer'], what: 'a site RM starts following a binding (counted although it rides on the query)' },
  revalidate: { messages: 2, wire: ['rmQuery', 'rmAnswer'], what: 'a site RM re-asks a followed binding, renewing the follow' },
  push: { messages: 2, wire: ['rmPush', 'rmPushAck'], what: 'one push and its acknowledgement, per recipient RM' },
};

export function wireName(kind: MessageKind): string {
  const [a, b] = EXCHANGES[kind].wire;
  return `${a}(${MsgType[a]})+${b}(${MsgType[b]})`;
}
