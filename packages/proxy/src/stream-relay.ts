import type { Socket } from 'node:net'
import { STREAM_LINGER_MS } from './constants.ts'
import type { StreamDuplex } from './stream-duplex.ts'
import { prefaceOk } from './stream-preface.ts'

/** Called for every chunk relayed: `in` from the mesh to the service, `out` back. */
export type OnRelayed = (direction: 'in' | 'out', bytes: number) => void

/**
 * Splices a mesh stream to a connection to the local service for the life of both, after
 * the stream's `+OK` preface; no byte is parsed.
 *
 * - Backpressure both ways (pipe: a full side pauses the other).
 * - Half-close both ways: the caller's end of writing ends the socket's writing (TCP FIN
 *   to the service), the service's FIN ends the stream's writing.
 * - The service's connection closing or failing at any point (a crash, a reset) ends the
 *   stream cleanly after what the service sent, so the caller sees its service hang up
 *   (ERR_SERVICE_RESET), never an instance loss; the caller's bytes still in flight are
 *   discarded. A stream reset or lost (caller gone, connection lost) destroys the socket.
 */
export function relayStream(stream: StreamDuplex, socket: Socket, onRelayed: OnRelayed): void {
  socket.setNoDelay(true)
  stream.write(prefaceOk())
  stream.on('data', (chunk: Buffer) => onRelayed('in', chunk.length))
  socket.on('data', (chunk: Buffer) => onRelayed('out', chunk.length))
  stream.pipe(socket)
  socket.pipe(stream)
  const closeSocket = (): void => {
    if (!socket.destroyed) socket.destroy()
  }
  stream.once('close', closeSocket)
  stream.on('error', closeSocket)
  socket.on('error', () => {}) // 'close' follows; see below
  socket.once('close', () => {
    // What the service sent before it went is delivered first; then the stream ends.
    stream.unpipe(socket)
    endStream(stream)
  })
}

/**
 * Ends the stream's writing (after `last`, if given) and discards what the caller still
 * sends; the stream closes once the caller closes its side, as it does when it reads the
 * end, or is reset after STREAM_LINGER_MS.
 */
export function endStream(stream: StreamDuplex, last?: Uint8Array): void {
  if (stream.destroyed) return
  if (!stream.writableEnded) {
    if (last != null) stream.end(last)
    else stream.end()
  }
  stream.resume()
  const linger = setTimeout(() => stream.destroy(), STREAM_LINGER_MS)
  linger.unref()
  stream.once('close', () => clearTimeout(linger))
}
