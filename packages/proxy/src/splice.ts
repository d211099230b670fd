import type { Duplex } from 'node:stream'

/**
 * Joins two connections into one byte pipe both ways for the rest of their lives (an
 * upgraded connection: WebSocket, ...), with each direction's backpressure. An end
 * (half-close) passes on as an end, after what was written before it; an error, or a side
 * that closes while the other still had to write to it, destroys the other, so neither
 * outlives its peer.
 */
export function splice(a: Duplex, b: Duplex): void {
  const destroyBoth = (): void => {
    if (!a.destroyed) a.destroy()
    if (!b.destroyed) b.destroy()
  }
  const closeWith = (other: Duplex) => (): void => {
    // An other side already ending flushes what it has, then closes by itself.
    if (!other.destroyed && !other.writableEnded) other.destroy()
  }
  a.on('error', destroyBoth)
  b.on('error', destroyBoth)
  a.once('close', closeWith(b))
  b.once('close', closeWith(a))
  a.pipe(b)
  b.pipe(a)
}
