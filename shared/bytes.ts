/** Compares 16 bytes (a host ID or a locator) in place; the hot paths use it instead of strings. */
export function sameBytes16(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): boolean {
  for (let i = 15; i >= 0; i--) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

/** The 16 bytes at buf[off..] as 32 lowercase hex digits (the map key HostId.hex uses), without a copy. */
export function hex16(buf: Uint8Array, off = 0): string {
  return Buffer.from(buf.buffer, buf.byteOffset + off, 16).toString('hex');
}
