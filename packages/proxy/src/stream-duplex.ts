import { Duplex } from 'node:stream'
import type { Stream, StreamCloseEvent, StreamMessageEvent } from '@libp2p/interface'
import { Uint8ArrayList } from 'uint8arraylist'
import { STREAM_HIGH_WATER_MARK } from './constants.ts'
import { type StreamBudget, streamBudget } from './stream-budget.ts'

export interface StreamDuplexOptions {
  /**
   * Keep the writable side open after the remote finished writing (true, like a Duplex),
   * or end it then (false, like the sockets Node's HTTP client and server use).
   */
  allowHalfOpen?: boolean
  /** Caps the stream's receive window; the process's own by default. */
  budget?: StreamBudget
}

/** The error a StreamDuplex is destroyed with when its stream closed under it. */
export class StreamClosedError extends Error {
  override readonly name = 'StreamClosedError'
  readonly code = 'ECONNRESET'
}

/**
 * A libp2p stream as a Node `stream.Duplex`, read and written like a TCP socket (by the
 * gateway's exchanges, the instance side's relay and a 101's splice):
 *
 * - backpressure both ways: the libp2p stream is paused while the Node side is full
 *   (yamux then stops granting window, so the remote stops sending; what the window
 *   already allowed still arrives, and MeshNode's streams have room for a whole window:
 *   p2pnode's STREAM_MAX_READ_BUFFER_BYTES; the window itself is capped by the process's
 *   StreamBudget, so a reader that stopped reading holds at most its share), and a write
 *   completes only once `send()` accepted it or, when it returned false, after 'drain';
 * - half-close: `end()` closes the stream for writing once everything was sent; the
 *   remote's close-write ends the readable side once everything buffered was read;
 * - errors: `destroy(err)` aborts the stream (a reset for the remote); an aborted or
 *   reset stream destroys the Duplex with its error;
 * - the small part of the `net.Socket` API a socket's user calls (`setTimeout` with a
 *   'timeout' event, `setNoDelay`, `setKeepAlive`, `ref`, `unref`).
 */
export class StreamDuplex extends Duplex {
  readonly stream: Stream
  /** Socket-style idle timeout in ms (0: none); see setTimeout(). */
  timeout = 0
  /** The remote closed its writing (a FIN): its end, unlike a connection closed under us. */
  remoteEnded = false
  /** The stream ended before its buffered bytes were delivered: end once they are. */
  private endAfterBuffered = false
  private idleTimer?: NodeJS.Timeout
  private paused = false
  private readonly budget: StreamBudget

  constructor(stream: Stream, options: StreamDuplexOptions = {}) {
    super({
      allowHalfOpen: options.allowHalfOpen ?? true,
      highWaterMark: STREAM_HIGH_WATER_MARK,
      // The stream's own 'close' decides when we are done; see onClose.
      emitClose: true,
      autoDestroy: true,
    })
    this.stream = stream
    this.budget = options.budget ?? streamBudget
    this.budget.add(this)
    stream.addEventListener('message', this.onMessage)
    stream.addEventListener('end', this.onEnd)
    stream.addEventListener('close', this.onClose)
    if (stream.status !== 'open') {
      queueMicrotask(() => this.destroy(new StreamClosedError(`stream is ${stream.status}`)))
    } else if (stream.readableEnded) {
      // A remote that wrote and closed during protocol negotiation: the stream ended
      // before the bytes the negotiation read ahead were put back; they come next.
      if (stream.readBufferLength > 0) this.endAfterBuffered = true
      else this.end_()
    }
  }

  private readonly onMessage = (evt: StreamMessageEvent): void => {
    this.touch()
    const data = evt.data
    let more = true
    if (data instanceof Uint8Array) {
      more = this.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength))
    } else {
      for (const chunk of data) {
        more = this.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))
      }
    }
    if (this.endAfterBuffered && this.stream.readBufferLength === 0) {
      this.endAfterBuffered = false
      this.end_()
      return
    }
    if (!more && !this.paused && this.stream.readStatus === 'readable') {
      this.paused = true
      this.stream.pause()
    }
  }

  /** The remote closed its writable end and everything it sent was delivered. */
  private readonly onEnd = (): void => {
    // An aborted or reset stream also ends its readable side; onClose reports those.
    if (this.stream.status === 'aborted' || this.stream.status === 'reset') return
    this.end_()
  }

  /** Ends the readable side: the remote's FIN, or its connection closed under us. */
  private end_(): void {
    // A closed transport closes the stream before it ends it; a FIN ends it first.
    this.remoteEnded = this.stream.status !== 'closed'
    this.push(null)
  }

  private readonly onClose = (evt: StreamCloseEvent): void => {
    if (evt.error != null) {
      const err = new StreamClosedError(
        `stream ${evt.local ? 'aborted' : 'reset'}: ${evt.error.message}`,
      )
      err.cause = evt.error
      this.destroy(err)
      return
    }
    // Closed cleanly both ways. When that was our end() completing, _final finishes the
    // job; otherwise (the connection closed under us) nothing more can be written.
    if (!this.writableEnded) this.destroy()
  }

  override _read(): void {
    if (!this.paused) return
    this.paused = false
    if (this.stream.readStatus === 'paused') this.stream.resume()
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error) => void): void {
    this.send(chunk, callback)
  }

  override _writev(
    chunks: Array<{ chunk: Buffer; encoding: BufferEncoding }>,
    callback: (err?: Error) => void,
  ): void {
    // One send for what Node corked together (e.g. HTTP headers + first body chunk).
    const list = new Uint8ArrayList()
    for (const c of chunks) list.append(c.chunk)
    this.send(list, callback)
  }

  private send(data: Uint8Array | Uint8ArrayList, callback: (err?: Error) => void): void {
    let accepted: boolean
    try {
      accepted = this.stream.send(data)
    } catch (err) {
      callback(err as Error)
      return
    }
    this.touch()
    if (accepted) {
      callback()
      return
    }
    // The stream queued the data but its buffer is full: the write completes on 'drain'
    // (not stream.onDrain(), whose promise stays resolved after the first drain).
    const stream = this.stream
    const onDrain = (): void => {
      stream.removeEventListener('close', onClose)
      callback()
    }
    const onClose = (evt: StreamCloseEvent): void => {
      stream.removeEventListener('drain', onDrain)
      callback(evt.error ?? new StreamClosedError('stream closed while writing'))
    }
    stream.addEventListener('drain', onDrain, { once: true })
    stream.addEventListener('close', onClose, { once: true })
  }

  override _final(callback: (err?: Error) => void): void {
    this.stream.close().then(
      () => callback(),
      (err: Error) => callback(err),
    )
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    this.clearIdleTimer()
    this.budget.remove(this)
    const stream = this.stream
    stream.removeEventListener('message', this.onMessage)
    stream.removeEventListener('end', this.onEnd)
    stream.removeEventListener('close', this.onClose)
    if (stream.status === 'open') {
      // Anything short of a clean close both ways is a reset for the remote.
      stream.abort(err ?? new StreamClosedError('destroyed'))
    }
    callback(err)
  }

  // --- the net.Socket surface Node's HTTP client and server use ---

  /** Emits 'timeout' after `ms` without reads or writes (0 disables), like net.Socket. */
  setTimeout(ms: number, callback?: () => void): this {
    if (callback != null) this.once('timeout', callback)
    if (ms > 0 && ms === this.timeout && this.idleTimer != null) {
      // The same again (a warm stream parked after each request): re-armed, not remade.
      this.idleTimer.refresh()
      return this
    }
    this.timeout = ms
    this.clearIdleTimer()
    if (ms > 0) {
      this.idleTimer = setTimeout(() => this.emit('timeout'), ms)
      this.idleTimer.unref()
    }
    return this
  }

  setNoDelay(_noDelay?: boolean): this {
    return this
  }

  setKeepAlive(_enable?: boolean, _initialDelay?: number): this {
    return this
  }

  ref(): this {
    return this
  }

  unref(): this {
    return this
  }

  private touch(): void {
    this.idleTimer?.refresh()
  }

  private clearIdleTimer(): void {
    if (this.idleTimer != null) clearTimeout(this.idleTimer)
    this.idleTimer = undefined
  }
}
