// Which of a chunk's lines a segment holds, as a bitmap (bit i: the chunk's
// line i), stored as hex on the segment row: a 256-line chunk costs 64
// characters per segment, however its lines ended. Shared by the runner
// (lines to skip on a reclaimed chunk), finalization (lines in no segment)
// and retries (lines that did not succeed).
export class LineBitmap {
  private readonly bytes: Uint8Array;

  constructor(
    readonly size: number,
    bytes?: Uint8Array,
  ) {
    this.bytes = bytes ?? new Uint8Array(Math.ceil(size / 8));
  }

  static fromHex(hex: string, size: number): LineBitmap {
    const bytes = new Uint8Array(Math.ceil(size / 8));
    bytes.set(Buffer.from(hex, 'hex').subarray(0, bytes.length));
    return new LineBitmap(size, bytes);
  }

  set(index: number): void {
    if (index < 0 || index >= this.size) throw new RangeError(`line index ${index} outside a chunk of ${this.size} lines`);
    this.bytes[index >> 3] |= 1 << (index & 7);
  }

  has(index: number): boolean {
    return index >= 0 && index < this.size && (this.bytes[index >> 3] & (1 << (index & 7))) !== 0;
  }

  /** Adds every line of `other` (a bitmap of the same chunk). */
  addAll(other: LineBitmap): void {
    for (let i = 0; i < this.bytes.length; i++) this.bytes[i] |= other.bytes[i] ?? 0;
  }

  /** Removes every line of `other`. */
  removeAll(other: LineBitmap): void {
    for (let i = 0; i < this.bytes.length; i++) this.bytes[i] &= ~(other.bytes[i] ?? 0);
  }

  count(): number {
    let n = 0;
    for (const byte of this.bytes) {
      let b = byte;
      while (b) {
        b &= b - 1;
        n++;
      }
    }
    return n;
  }

  toHex(): string {
    return Buffer.from(this.bytes).toString('hex');
  }
}
