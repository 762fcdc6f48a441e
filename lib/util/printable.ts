// printable.ts - untrusted text made safe for one log line.
//
// Peers send anything: binary probes, 8-bit HELO names, terminal escapes. A
// log line shows printable ASCII as it is and escapes everything else, so a
// line never carries raw bytes (or a byte that a terminal acts on) and says
// exactly what came: bytes of a Buffer as \xNN, characters of a string
// beyond ASCII as \u{N}. Pure: codecs use it without loading the logger.

const UNPRINTABLE = /[^\x20-\x7e]/gu;

/** At most `max` characters of `value`, escaped, with a mark when cut. */
export function printable(value: string | Buffer, max = 200): string {
  const bytes = typeof value !== 'string';
  const text = bytes ? value.toString('latin1') : value;
  const cut = text.length > max;
  const shown = (cut ? text.slice(0, max) : text).replace(UNPRINTABLE, (c) => {
    const n = c.codePointAt(0)!;
    return bytes || n < 0x80 ? `\\x${n.toString(16).padStart(2, '0')}` : `\\u{${n.toString(16)}}`;
  });
  return cut ? `${shown}...(${text.length} chars)` : shown;
}
