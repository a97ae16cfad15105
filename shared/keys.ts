// Only mapping-server/server.ts still imports KeyPair from here (it is being rewritten on another
// branch). Ed25519 keys are shared/crypto/ed25519.ts, key files shared/keyfile.ts; delete this file
// once that import points at crypto/ed25519.ts.
export type { KeyPair } from './crypto/ed25519.ts';
