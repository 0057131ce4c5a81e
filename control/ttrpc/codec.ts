/**
 * The two shapes of a protobufjs static message class that the typed ttRPC helpers need.
 * Any object with these methods works (a hand-written codec, a test double), so the ttRPC layer
 * is not tied to the Kata protocol or to protobufjs.
 */

/** Encodes a message: `encode(message).finish()` gives its protobuf bytes (protobufjs style). */
export interface MessageEncoder<T> {
  encode(message: T): { finish(): Uint8Array };
}

/** Decodes protobuf bytes into a message; throws on malformed input (protobufjs style). */
export interface MessageDecoder<T> {
  decode(bytes: Uint8Array): T;
}
