import type { MessageStream, StreamMuxerFactory } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'

/**
 * Past this many queued bytes a connection's frames leave at once instead of at the end
 * of the event-loop turn: one full Noise message (65,535 bytes minus its 16-byte tag).
 */
export const COALESCE_MAX_BYTES = 65_519

/**
 * Makes a secured connection send what its muxer wrote during one event-loop turn as
 * one message: yamux writes every frame (a request, a response, each window update)
 * separately, and below it every message costs a Noise encryption, a pnet XOR pass and
 * a socket write (a syscall); the receiver pays a read and a decryption for each. Frames
 * queue until setImmediate — after the I/O callbacks of this turn, so no added wait —
 * or until COALESCE_MAX_BYTES, when whole messages' worth leave and the rest waits for
 * the end of the turn. Order is kept; close() sends what is queued first.
 */
export function coalesceWrites<T extends MessageStream>(conn: T): T {
  const send = conn.send.bind(conn)
  const close = conn.close.bind(conn)
  let queued: Uint8ArrayList | undefined
  let scheduled = false
  const flush = (): boolean => {
    const data = queued
    queued = undefined
    if (data == null) return !conn.writableNeedsDrain
    // An aborted or closed connection drops what was queued, as it drops its own buffer.
    if (conn.status !== 'open') return false
    return send(data)
  }
  const onImmediate = (): void => {
    scheduled = false
    try {
      flush()
    } catch (err) {
      conn.abort(err as Error)
    }
  }
  /** Sends the whole Noise messages' worth of what is queued and keeps the rest for the
   * end of the turn (or the next frame): a 64 KiB frame (a socket read relayed) is a
   * little more than one message, and sending it all at once cut a ~30-byte message
   * (with its own length prefix, encryption and tag) after every full one. */
  const flushWhole = (): boolean => {
    const data = queued as Uint8ArrayList
    const whole = data.byteLength - (data.byteLength % COALESCE_MAX_BYTES)
    if (whole === data.byteLength) return flush()
    if (conn.status !== 'open') return flush()
    const head = data.sublist(0, whole)
    data.consume(whole)
    return send(head)
  }
  conn.send = (data: Uint8Array | Uint8ArrayList): boolean => {
    queued ??= new Uint8ArrayList()
    queued.append(data)
    if (queued.byteLength >= COALESCE_MAX_BYTES) {
      const more = flushWhole()
      if (queued == null || scheduled) return more
      scheduled = true
      setImmediate(onImmediate)
      return more
    }
    if (!scheduled) {
      scheduled = true
      setImmediate(onImmediate)
    }
    // The real backpressure signal: the connection's own buffer is still draining.
    return !conn.writableNeedsDrain
  }
  conn.close = async (options) => {
    flush()
    await close(options)
  }
  return conn
}

/** A muxer factory whose muxers write through coalesceWrites(). */
export function coalescingMuxer<A extends unknown[]>(
  factory: (...args: A) => StreamMuxerFactory,
): (...args: A) => StreamMuxerFactory {
  return (...args: A) => {
    const inner = factory(...args)
    return {
      protocol: inner.protocol,
      createStreamMuxer: (maConn: MessageStream) => inner.createStreamMuxer(coalesceWrites(maConn)),
    }
  }
}
