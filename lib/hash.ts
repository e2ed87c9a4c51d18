/**
 * A short content digest for workflow code, which cannot use node:crypto: two 32-bit FNV-1a
 * passes with different offsets, 16 hex digits. Names a plan so a stale approval can be told
 * apart; it is not a security boundary (the approver is authenticated by Temporal).
 */
export function fnv1a(text: string): string {
  const pass = (offset: number) => {
    let h = offset >>> 0;
    for (let i = 0; i < text.length; i++) {
      h ^= text.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h.toString(16).padStart(8, '0');
  };
  return pass(0x811c9dc5) + pass(0x050c5d1f);
}
