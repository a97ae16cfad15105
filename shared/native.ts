import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { constants as osConstants } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SystemError } from './errors.ts';

// node-gyp puts the addons (binding.gyp at the repo root) in build/Release, whatever the cwd.
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const requireNative = createRequire(import.meta.url);
const loaded = new Map<string, unknown>();

/**
 * Loads build/Release/<name>.node once. The result is `unknown`: each wrapper narrows it to the
 * binding it declares next to its C++ source.
 */
export function loadNative(name: string): unknown {
  const cached = loaded.get(name);
  if (cached !== undefined) return cached;
  const file = path.join(repoRoot, 'build', 'Release', `${name}.node`);
  if (!existsSync(file)) {
    throw new SystemError('NATIVE_NOT_BUILT', `the native addon ${name} is not built (${file} is missing)`, 'run npm install (it builds the addon with node-gyp)');
  }
  const binding: unknown = requireNative(file);
  loaded.set(name, binding);
  return binding;
}

/** What the addons throw for a failed system call: errno (positive, Linux numbering) and the step. */
export interface NativeErrnoError extends Error {
  errno: number;
  syscall: string;
}

export function isNativeErrnoError(e: unknown): e is NativeErrnoError {
  return e instanceof Error && 'errno' in e && typeof e.errno === 'number' && 'syscall' in e && typeof e.syscall === 'string';
}

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(osConstants.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

/** 'EADDRINUSE' for 98: the name people search for, in messages and logs. */
export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `errno ${errno}`;
}
