/**
 * Where the messages of a streamed answer end, so a draining hub can end a watch or a followed log between
 * two messages rather than inside one. The framing comes from the answer's `Content-Type`, never from the
 * request: a client-go informer asks for protobuf, whose length-prefixed frames may hold any byte, a
 * newline too.
 *
 * - `application/json` (a watch: one JSON event per line) and `text/plain` (a log): newline-ended.
 * - `application/vnd.kubernetes.protobuf` (a watch): each frame a 4-byte big-endian length, then that
 *   many bytes.
 * - Anything else (CBOR sequences, an encoded body, an unknown type): no framing is known, so the stream
 *   is not wound down; it finishes by itself or is cut with its upstream.
 *
 * Only lengths are read: bytes pass through uncounted past the current frame's end, and at most a 4-byte
 * partial length is held.
 * @module
 */

/** Message boundaries of one streamed answer, fed its body bytes in order. */
export interface MessageFraming {
  /** Whether the bytes fed so far end with a whole message (true before any byte). */
  readonly atBoundary: boolean;
  /**
   * Takes `chunk`'s bytes in order: up to and including the end of the first message that ends in it
   * when `toBoundary` (0 when the bytes before ended one), else all of them. Returns how many it took.
   */
  take(chunk: Uint8Array, toBoundary: boolean): number;
}

/** Byte that ends a JSON watch event and a log line. */
const newline = 0x0a;

/** Newline-ended messages: a JSON watch, a log. */
class NewlineFraming implements MessageFraming {
  #last: number | undefined;

  get atBoundary(): boolean {
    return this.#last === undefined || this.#last === newline;
  }

  take(chunk: Uint8Array, toBoundary: boolean): number {
    if (toBoundary && this.atBoundary) return 0;
    const end = toBoundary ? chunk.indexOf(newline) + 1 : 0;
    const n = end > 0 ? end : chunk.length;
    if (n > 0) this.#last = chunk[n - 1];
    return n;
  }
}

/** Frames of a 4-byte big-endian length and that many bytes: a protobuf watch. */
class LengthPrefixedFraming implements MessageFraming {
  /** Length bytes still to read for the next frame (4 at a boundary). */
  #lengthLeft = 4;
  #length = 0;
  /** Payload bytes left in the current frame. */
  #payloadLeft = 0;

  get atBoundary(): boolean {
    return this.#lengthLeft === 4 && this.#payloadLeft === 0;
  }

  take(chunk: Uint8Array, toBoundary: boolean): number {
    let at = 0;
    if (toBoundary && this.atBoundary) return 0;
    while (at < chunk.length) {
      if (this.#payloadLeft > 0) {
        const n = Math.min(this.#payloadLeft, chunk.length - at);
        this.#payloadLeft -= n;
        at += n;
      } else {
        this.#length = this.#length * 256 + chunk[at++]!;
        if (--this.#lengthLeft > 0) continue;
        this.#payloadLeft = this.#length;
        this.#length = 0;
        this.#lengthLeft = 4;
      }
      if (toBoundary && this.atBoundary) return at;
    }
    return at;
  }
}

/** The media type of a `Content-Type` value, lower case, without parameters. */
function mediaType(contentType: string): string {
  return (contentType.split(";", 1)[0] ?? "").trim().toLowerCase();
}

/**
 * The framing of a streamed answer with these headers, or undefined when its messages cannot be told
 * apart (an unknown type, or a `Content-Encoding` other than identity: boundaries lie in decoded bytes).
 */
export function messageFraming(
  contentType: string | undefined,
  contentEncoding: string | undefined,
): MessageFraming | undefined {
  const encoding = (contentEncoding ?? "").trim().toLowerCase();
  if (encoding !== "" && encoding !== "identity") return undefined;
  switch (mediaType(contentType ?? "")) {
    case "application/json":
    case "text/plain":
      return new NewlineFraming();
    case "application/vnd.kubernetes.protobuf":
      return new LengthPrefixedFraming();
    default:
      return undefined;
  }
}
