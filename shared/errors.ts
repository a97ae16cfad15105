/**
 * Every error realmnet raises on purpose has a stable code (never changed once released), a message
 * that says what is wrong, and a hint that says how to fix it. docs/errors.md lists them.
 * ConfigError and UsageError are the user's mistakes: the CLI prints them as one line, no stack.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'CONFIG_NOT_FOUND'
  | 'USAGE'
  | 'NOT_ROOT'
  | 'TUN_NO_PERMISSION'
  | 'TUN_NO_DEVICE'
  | 'TUN_NAME_TAKEN'
  | 'TUN_FAILED'
  | 'UDP_PORT_IN_USE'
  | 'UDP_ADDRESS_NOT_AVAILABLE'
  | 'UDP_FAILED'
  | 'NATIVE_NOT_BUILT'
  | 'NETCONFIG_FAILED'
  | 'CONTROL_SOCKET_IN_USE'
  | 'CONTROL_PERMISSION_DENIED'
  | 'CONTROL_SOCKET_NOT_TRUSTED'
  | 'ID_INVALID'
  | 'PREFIX_INVALID'
  | 'KEY_INVALID'
  | 'BINDING_INVALID'
  | 'STORE_FAILED'
  | 'TIMEOUT'
  | 'RM_CLIENT_BUSY'
  | 'RM_CLIENT_STOPPED'
  | 'PUBLISH_FAILED'
  | 'METRICS_LISTEN_FAILED'
  | 'INTERNAL';

export class RealmnetError extends Error {
  readonly code: ErrorCode;
  readonly hint: string;
  /** User errors are printed as one line without a stack. */
  readonly userFacing: boolean;

  constructor(code: ErrorCode, message: string, hint = '', options?: { cause?: unknown; userFacing?: boolean }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.hint = hint;
    this.userFacing = options?.userFacing ?? true;
  }

  /** One line for a terminal: what is wrong, then how to fix it. */
  oneLine(): string {
    return this.hint ? `${this.message} (${this.hint})` : this.message;
  }
}

export class ConfigError extends RealmnetError {
  constructor(message: string, hint = '', code: ErrorCode = 'CONFIG_INVALID') {
    super(code, message, hint);
  }
}

export class UsageError extends RealmnetError {
  constructor(message: string, hint = '') {
    super('USAGE', message, hint);
  }
}

/** Errors from the operating system around devices and sockets (TUN, UDP, routes). */
export class SystemError extends RealmnetError {}

export function isRealmnetError(e: unknown): e is RealmnetError {
  return e instanceof RealmnetError;
}

/** One line for a log field: a realmnet error with its hint, any other error's message, or the value. */
export function errorLine(e: unknown): string {
  return isRealmnetError(e) ? e.oneLine() : e instanceof Error ? e.message : String(e);
}
