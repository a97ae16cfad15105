// Who is at the other end of a local (unix) socket, as the kernel recorded it: the realmnet_peercred
// addon (native/peercred.cc) asks getsockopt(SO_PEERCRED, SO_PEERGROUPS) on the socket's fd.
//
// For a socket a server accepted, that is the process that connected; for a socket a client
// connected, the process that called listen(). The kernel took the credentials at connect()/listen()
// time, so the peer cannot forge them; the agent's control socket (agent/control.ts) trusts nothing else.
import type { Socket } from 'node:net';
import { SystemError } from './errors.ts';
import { errnoName, isNativeErrnoError, loadNative } from './native.ts';

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  /** The primary group. */
  readonly gid: number;
  /** Supplementary groups (empty on kernels before 4.13, which lack SO_PEERGROUPS). */
  readonly groups: readonly number[];
}

/** The addon's surface (native/peercred.cc). */
interface PeercredBinding {
  peerCredentials(fd: number): PeerCredentials;
  groupId(name: string): number | null;
}

function binding(): PeercredBinding {
  return loadNative('realmnet_peercred') as PeercredBinding;
}

/** Loads the addon now, so that a missing build fails at start-up (NATIVE_NOT_BUILT), not per connection. */
export function checkPeercred(): void {
  binding();
}

/**
 * The fd under a connected net.Socket. Node keeps it on the socket's libuv handle (`_handle.fd`), which
 * its types do not declare: narrowed from `unknown` here, in the one place that relies on it.
 */
function socketFd(socket: Socket): number {
  const handle: unknown = Reflect.get(socket, '_handle');
  if (typeof handle === 'object' && handle !== null && 'fd' in handle && typeof handle.fd === 'number' && handle.fd >= 0) return handle.fd;
  throw new SystemError('INTERNAL', 'the control socket connection has no file descriptor (closed, or not a unix socket)');
}

/** The peer's credentials; throws SystemError INTERNAL if the socket is gone or not a unix socket. */
export function peerCredentials(socket: Socket): PeerCredentials {
  const fd = socketFd(socket);
  try {
    return binding().peerCredentials(fd);
  } catch (e) {
    if (!isNativeErrnoError(e)) throw e;
    throw new SystemError('INTERNAL', `cannot read the peer's credentials: ${e.syscall} gave ${errnoName(e.errno)}`);
  }
}

/** The gid of a group name (through NSS, like `getent group`), or null if there is none. */
export function groupId(name: string): number | null {
  try {
    return binding().groupId(name);
  } catch (e) {
    if (!isNativeErrnoError(e)) throw e;
    throw new SystemError('INTERNAL', `cannot look up group "${name}": ${e.syscall} gave ${errnoName(e.errno)}`);
  }
}
