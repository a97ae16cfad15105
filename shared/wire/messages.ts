/**
 * Control messages between agents (RM clients) and the Realm Manager: one discriminated union,
 * decoded at one edge (codec.ts). docs/control-protocol.md is the reference for every field.
 *
 * Byte strings (IDs, keys, signed bindings) are Uint8Array. A binding travels as its signed wire
 * form (shared/binding.ts) and is decoded and verified by whoever uses it, never trusted as is.
 */

export const PROTOCOL_VERSION = 1;

/**
 * Largest control datagram, sent or accepted: 1280 (the IPv6 minimum MTU) - 40 (IPv6) - 8 (UDP),
 * so a control message is never fragmented on any path.
 */
export const MAX_DATAGRAM = 1232;
/** version, type, session ID (u32), sequence number (u48). */
export const HEADER_LEN = 12;
/** Most IDs in one subscribe / unsubscribe. 32 × 17 bytes leaves room under MAX_DATAGRAM. */
export const MAX_IDS_PER_MESSAGE = 32;

/** Message type numbers on the wire. Never renumber; add. */
export const MsgType = {
  hello: 1,
  welcome: 2,
  reject: 3,
  cookie: 4,
  lookup: 10,
  lookupReply: 11,
  register: 12,
  registerReply: 13,
  subscribe: 14,
  subscribeReply: 15,
  unsubscribe: 16,
  unsubscribeReply: 17,
  push: 20,
  pushAck: 21,
  revoke: 22,
  renew: 30,
  renewReply: 31,
  challenge: 32,
  challengeReply: 33,
  publish: 40,
  publishReply: 41,
  serve: 42,
  serveReply: 43,
  groupReply: 44,
  groupPush: 45,
  rmQuery: 50,
  rmAnswer: 51,
  rmPush: 52,
  rmPushAck: 53,
} as const;
export type MsgTypeName = keyof typeof MsgType;

/** Types sent without a session (sid 0, no MAC). Everything else needs a session and its MAC. */
export const UNAUTHENTICATED_TYPES: ReadonlySet<number> = new Set([MsgType.hello, MsgType.welcome, MsgType.reject, MsgType.cookie, MsgType.rmQuery, MsgType.rmAnswer, MsgType.rmPush, MsgType.rmPushAck]);
/** RM ↔ RM messages (the hierarchy, docs/hierarchy.md): sessionless, each signed with the sender RM's Ed25519 key instead. */
export const RM_TO_RM_TYPES: ReadonlySet<number> = new Set([MsgType.rmQuery, MsgType.rmAnswer, MsgType.rmPush, MsgType.rmPushAck]);

/** A HELLO's proof that the host holds a join token (shared/membership.ts, docs/security.md). */
export interface JoinProof {
  /** 16 bytes. */
  readonly inviteId: Uint8Array;
  /** Unix seconds, as in the token. */
  readonly expiresAt: number;
  /** Keyed BLAKE2s-128 over the HELLO's signed bytes, keyed with the token's secret. */
  readonly proof: Uint8Array;
}

/** Client → RM, no session: proves the client holds the key of hostId and offers an X25519 share. */
export interface Hello {
  readonly type: 'hello';
  readonly reqId: number;
  /** 16 bytes. */
  readonly hostId: Uint8Array;
  /** Length of the prefix hostId was derived under (shared/ids.ts). */
  readonly prefixLen: number;
  /** Ed25519, 32 bytes. */
  readonly publicKey: Uint8Array;
  /** X25519 ephemeral public key, 32 bytes. */
  readonly ephemeral: Uint8Array;
  /** 16 random bytes. */
  readonly nonce: Uint8Array;
  /** Ed25519 over helloSignedBytes(). */
  readonly signature: Uint8Array;
  /** Present only while the host is not yet a member and holds a join token. */
  readonly join: JoinProof | null;
  /** The cookie from the RM's COOKIE answer (proves the source address); null on the first try. */
  readonly cookie: Uint8Array | null;
}

/**
 * RM → client, no session: "send your HELLO again with this cookie". Smaller than any HELLO, and
 * the RM keeps nothing for it, so a spoofed HELLO flood costs the RM one BLAKE2s per datagram.
 */
export interface Cookie {
  readonly type: 'cookie';
  readonly reqId: number;
  /** 16 bytes. */
  readonly cookie: Uint8Array;
}

/** RM → client, no session: the session ID and the RM's X25519 share, signed by the RM's key. */
export interface Welcome {
  readonly type: 'welcome';
  readonly reqId: number;
  readonly sid: number;
  /** The RM's Ed25519 key, 32 bytes (clients may pin it). */
  readonly rmPublicKey: Uint8Array;
  readonly ephemeral: Uint8Array;
  /** Ed25519 over welcomeSignedBytes(). */
  readonly signature: Uint8Array;
  /** The host's membership certificate (shared/membership.ts, CERT_LEN bytes). */
  readonly cert: Uint8Array;
}

export const RejectCode = {
  /** The session ID is not (or no longer) known: run a new hello. */
  sessionUnknown: 1,
  /** The RM has no room for another session now: retry later. */
  busy: 2,
  /** The host ID is not a member of the realm (or was revoked): ask the operator to admit it. */
  notMember: 3,
  /** The join token is invalid, expired or already used. */
  badToken: 4,
} as const;
export type RejectCodeValue = (typeof RejectCode)[keyof typeof RejectCode];

/**
 * RM → client, no session: a message could not be tied to a session (sid: the session ID it
 * carried), or a HELLO was refused (reqId: the HELLO's). Unauthenticated, so only a hint: a client
 * reacts by running a new HELLO, never by trusting anything else in it.
 */
export interface Reject {
  readonly type: 'reject';
  readonly reqId: number;
  readonly code: number;
  readonly sid: number;
}

export interface Lookup {
  readonly type: 'lookup';
  readonly reqId: number;
  readonly hostId: Uint8Array;
}

/** A policy adjustment for one locator of the binding (by index): realm policy on uplink use. */
export interface LocatorPref {
  readonly index: number;
  readonly priority: number;
  readonly weight: number;
  readonly up: boolean;
}

/**
 * The answer to a lookup. binding null = negative answer: unknown ID, expired, or not allowed to this
 * asker (the three are indistinguishable on purpose: location privacy). ttl is how long the asker may
 * cache the answer, in seconds.
 */
export interface LookupReply {
  readonly type: 'lookupReply';
  readonly reqId: number;
  readonly hostId: Uint8Array;
  readonly ttl: number;
  readonly binding: Uint8Array | null;
  readonly prefs: readonly LocatorPref[];
  /** The membership certificate of the binding's host: present iff binding is (codec.ts checks it). */
  readonly cert: Uint8Array | null;
  /**
   * For a host of another realm (docs/hierarchy.md): a delegation signed by this RM naming the key
   * that speaks for that realm's prefix, so the agent can check the foreign certificate. Absent
   * (null) for this realm's own hosts; the field is then left off the wire.
   */
  readonly endorsement?: Uint8Array | null;
}

export interface Register {
  readonly type: 'register';
  readonly reqId: number;
  /** Signed binding, wire form. */
  readonly binding: Uint8Array;
}

export const RegisterStatus = {
  /** Stored durably (or an identical refresh). */
  ok: 0,
  /** The sequence number is lower than the stored one, or equal with different content. */
  stale: 1,
  /** Bad signature, or the ID is not the hash of the key. */
  forged: 2,
  /** The ID is outside this realm and its sub-realms, or the prefix length is not one of theirs. */
  notInRealm: 3,
  /** The binding is not the session holder's own. */
  notOwner: 4,
  /** Structurally invalid binding. */
  malformed: 5,
  /** The store failed or is full; retry later. */
  unavailable: 6,
} as const;
export type RegisterStatusValue = (typeof RegisterStatus)[keyof typeof RegisterStatus];

export interface RegisterReply {
  readonly type: 'registerReply';
  readonly reqId: number;
  readonly hostId: Uint8Array;
  /** The sequence number now stored for hostId (0 if none). */
  readonly seq: number;
  readonly status: number;
  /** Seconds until the registration expires unless refreshed; 0 when not registered. */
  readonly expiresIn: number;
  /** The refresh interval the RM asks for, in seconds. */
  readonly refresh: number;
}

export interface Subscribe {
  readonly type: 'subscribe';
  readonly reqId: number;
  readonly hostIds: readonly Uint8Array[];
}

/**
 * accepted counts the IDs now followed (including ones the asker may not see: those are followed
 * silently and never pushed, so the reply reveals nothing).
 */
export interface SubscribeReply {
  readonly type: 'subscribeReply';
  readonly reqId: number;
  readonly accepted: number;
}

export interface Unsubscribe {
  readonly type: 'unsubscribe';
  readonly reqId: number;
  readonly hostIds: readonly Uint8Array[];
}

export interface UnsubscribeReply {
  readonly type: 'unsubscribeReply';
  readonly reqId: number;
}

/** RM → subscriber: a new binding for an ID it follows. Retransmitted until acknowledged. */
export interface Push {
  readonly type: 'push';
  readonly pushId: number;
  readonly binding: Uint8Array;
  readonly ttl: number;
  readonly prefs: readonly LocatorPref[];
  /** The membership certificate of the binding's host. */
  readonly cert: Uint8Array;
  /** As in LOOKUP-REPLY: for a host of another realm. */
  readonly endorsement?: Uint8Array | null;
}

export interface PushAck {
  readonly type: 'pushAck';
  readonly pushId: number;
}

/**
 * RM → follower: the host with this ID was revoked from the realm. Retransmitted like a push (same
 * push ID space) until PUSH-ACK. The follower forgets its binding and refuses it from then on.
 */
export interface Revoke {
  readonly type: 'revoke';
  readonly pushId: number;
  readonly hostId: Uint8Array;
}

/** Client → RM: a fresh membership certificate for the session's host, please. */
export interface Renew {
  readonly type: 'renew';
  readonly reqId: number;
}

/** cert null: the host is no longer a member. */
export interface RenewReply {
  readonly type: 'renewReply';
  readonly reqId: number;
  readonly cert: Uint8Array | null;
}

/**
 * RM → the new address a session's valid message came from: echo this before anything larger than
 * what you sent goes there (return routability, as QUIC's PATH_CHALLENGE).
 */
export interface Challenge {
  readonly type: 'challenge';
  /** 16 random bytes. */
  readonly token: Uint8Array;
}

/** Client → RM, from the challenged address: the token echoed. */
export interface ChallengeReply {
  readonly type: 'challengeReply';
  readonly token: Uint8Array;
}

/**
 * Slice 2 (docs/slice2.md). Client → RM: a user or data binding signed by its owner (shared/group.ts).
 * Any member may carry it (the owner's CLI hands it to its local agent): the owner's signature is
 * what makes it valid, not who sends it.
 */
export interface Publish {
  readonly type: 'publish';
  readonly reqId: number;
  readonly binding: Uint8Array;
}

export const GroupStatus = {
  /** Stored durably (or the same binding again). */
  ok: 0,
  /** Older than (or conflicting with) the stored binding. */
  stale: 1,
  /** Bad signature, or the ID is not derived from the key (and name). */
  forged: 2,
  /** The ID is not under this realm's user or data prefix. */
  notInRealm: 3,
  /** SERVE: the owner's binding does not list the sender's host. */
  notListed: 4,
  malformed: 5,
  /** The store failed or is full. */
  unavailable: 6,
  /** SERVE without a binding, for an ID the RM has none for. */
  unknown: 7,
} as const;

export interface PublishReply {
  readonly type: 'publishReply';
  readonly reqId: number;
  readonly id: Uint8Array;
  readonly status: number;
  /** The sequence number now stored for id (0 if none). */
  readonly seq: number;
}

/**
 * Client → RM: the session's host consents to serve the user or data ID `id` (it will accept
 * traffic for it). binding: the owner's binding listing the host, if the host has it (stored when
 * newer); null to consent under the binding the RM holds. Refreshed like a registration.
 */
export interface Serve {
  readonly type: 'serve';
  readonly reqId: number;
  readonly id: Uint8Array;
  readonly binding: Uint8Array | null;
}

export interface ServeReply {
  readonly type: 'serveReply';
  readonly reqId: number;
  readonly id: Uint8Array;
  readonly status: number;
  /** Seconds until the consent lapses unless refreshed. */
  readonly expiresIn: number;
}

/** A host's binding served inline with a group answer (as in LOOKUP-REPLY). */
export interface HostAnswer {
  readonly binding: Uint8Array;
  readonly prefs: readonly LocatorPref[];
  readonly cert: Uint8Array;
  readonly ttl: number;
}

/**
 * The answer to a LOOKUP of a user or data ID: the owner's binding, which of its hosts are present
 * (one flag per listed host, in its order: consented, registered and with a locator up), and the
 * host bindings of as many present hosts as fit, best first, so the first packet costs one round
 * trip. binding null: unknown or not allowed (the same negative answer as for a host ID).
 */
export interface GroupReply {
  readonly type: 'groupReply';
  readonly reqId: number;
  readonly id: Uint8Array;
  readonly ttl: number;
  readonly binding: Uint8Array | null;
  readonly present: Uint8Array;
  readonly hosts: readonly HostAnswer[];
}

/** RM → follower of a user or data ID: its binding or its hosts' presence changed (the RCA). Acked with PUSH-ACK. */
export interface GroupPush {
  readonly type: 'groupPush';
  readonly pushId: number;
  readonly binding: Uint8Array;
  readonly present: Uint8Array;
  readonly ttl: number;
}

/** How a binding is kept across the hierarchy (docs/hierarchy.md): by its customer class. */
export const CustomerClass = { none: 0, static: 1, nomadic: 2, mobile: 3 } as const;
export type CustomerClassValue = (typeof CustomerClass)[keyof typeof CustomerClass];

/**
 * RM → RM: "who speaks for id?" (the hierarchy). The fields below are what the asking RM signs
 * (signed: their msgpack form; signature: Ed25519 by the key that ends chain). Padded to
 * RM_QUERY_MIN bytes so that no answer is larger than the query (no amplification towards a
 * spoofed source), as QUIC pads its first datagram.
 */
export interface RmQuery {
  readonly type: 'rmQuery';
  readonly reqId: number;
  readonly id: Uint8Array;
  /** Unix seconds when signed: answering RMs refuse a query more than RM_QUERY_SKEW_S old. */
  readonly time: number;
  /** Ask the authoritative RM to push changes of id (it does for pushed classes). */
  readonly follow: boolean;
  /** The asking RM's delegation chain from the top RM's key (shared/delegation.ts). */
  readonly chain: readonly Uint8Array[];
  readonly signed: Uint8Array;
  readonly signature: Uint8Array;
}

export const RmAnswerKind = { negative: 0, referral: 1, binding: 2 } as const;

/** RM → RM: a referral, a binding, or a negative answer, signed by the answering RM's key. */
export interface RmAnswer {
  readonly type: 'rmAnswer';
  readonly reqId: number;
  readonly id: Uint8Array;
  readonly kind: number;
  /** Seconds the asker may cache it. */
  readonly ttl: number;
  /** The binding's customer class (CustomerClass); none for referrals and negative answers. */
  readonly cls: number;
  /** The answering RM pushes changes of id to the asker from now on. */
  readonly followed: boolean;
  /** kind referral: the delegation of the longest matching prefix, signed by the answering RM. */
  readonly referral: Uint8Array | null;
  /** kind binding: */
  readonly binding: Uint8Array | null;
  readonly cert: Uint8Array | null;
  readonly prefs: readonly LocatorPref[];
  readonly signed: Uint8Array;
  readonly signature: Uint8Array;
}

/** RM → following RM: a new binding of a host it asked about with follow; acknowledged with RM-PUSH-ACK. */
export interface RmPush {
  readonly type: 'rmPush';
  readonly pushId: number;
  /** Unix seconds when signed (a replayed push with the same binding sequence is refused if older). */
  readonly time: number;
  readonly binding: Uint8Array;
  readonly cert: Uint8Array;
  readonly prefs: readonly LocatorPref[];
  readonly ttl: number;
  readonly cls: number;
  readonly signed: Uint8Array;
  readonly signature: Uint8Array;
}

export interface RmPushAck {
  readonly type: 'rmPushAck';
  readonly pushId: number;
}

export type ControlMessage =
  | RmQuery
  | RmAnswer
  | RmPush
  | RmPushAck
  | Publish
  | PublishReply
  | Serve
  | ServeReply
  | GroupReply
  | GroupPush
  | Hello
  | Welcome
  | Reject
  | Lookup
  | LookupReply
  | Register
  | RegisterReply
  | Subscribe
  | SubscribeReply
  | Unsubscribe
  | UnsubscribeReply
  | Push
  | PushAck
  | Cookie
  | Revoke
  | Renew
  | RenewReply
  | Challenge
  | ChallengeReply;

/** Why a datagram was dropped. Each is a counter on both sides (`rx.drop.<reason>`). */
export type DropReason =
  | 'tooShort'
  | 'tooLong'
  | 'badVersion'
  | 'badType'
  | 'badSession'
  | 'badMac'
  | 'replay'
  | 'malformed'
  | 'unexpected'
  | 'rateLimited';

export const DROP_REASONS: readonly DropReason[] = [
  'tooShort',
  'tooLong',
  'badVersion',
  'badType',
  'badSession',
  'badMac',
  'replay',
  'malformed',
  'unexpected',
  'rateLimited',
];

export type Decoded<T> = { ok: true; msg: T } | { ok: false; reason: DropReason };

/** The fixed header every datagram starts with. */
export interface Header {
  readonly version: number;
  readonly type: number;
  /** Session ID, 0 for hello / welcome / reject. */
  readonly sid: number;
  /** Per-session, per-direction sequence number (replay protection); 0 without a session. */
  readonly seq: number;
}
