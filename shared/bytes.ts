/** Compares 16 bytes (a host ID or a locator) in place; the hot paths use it instead of strings. */
export function sameBytes16(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): boolean {
  for (let i = 15; i >= 0; i--) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}
