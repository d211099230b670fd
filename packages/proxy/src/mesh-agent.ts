import type { Libp2p, PeerId } from '@libp2p/interface'
import {
  HTTP_PROTOCOL,
  IDLE_STREAM_TIMEOUT_MS,
  MAX_HTTP_STREAMS_PER_CONNECTION,
  MAX_STREAM_WAITERS_PER_INSTANCE,
  MAX_STREAMS_PER_INSTANCE,
  OPEN_STREAM_TIMEOUT_MS,
  STREAM_SLOT_WAIT_MS,
} from './constants.ts'
import { ProxyError } from './errors.ts'
import { ResponseParser } from './response-parser.ts'
import { StreamDuplex } from './stream-duplex.ts'
import { readPreface } from './stream-preface.ts'
import { StreamSlots } from './stream-slots.ts'

export interface MeshAgentInit {
  libp2p: Libp2p
  peer: PeerId
  /** Called for every new stream (warm ones are reused without it). */
  onStreamOpened?: () => void
}

/** What an exchange hears of the stream it holds (MeshStream.attach). */
export interface StreamUser {
  onData(chunk: Buffer): void
  /** The remote ended its side. */
  onEnd(): void
  onClose(): void
  onError(err: Error): void
}

/**
 * One `/mtc/http/2.0.0` stream to an instance, which the instance relays byte for byte to
 * one connection to its service: an HTTP/1.1 connection to the service for the stream's
 * life, with the parser of its responses.
 *
 * Its events go to whoever holds it: the exchange in progress (attach), or, while it is
 * idle (park), the pool that drops it. Its listeners stay for its life and its idle timer
 * is re-armed, not remade: adding and removing listeners was ~4 % of a loaded client
 * proxy's CPU samples, and each request made sixteen such changes here.
 */
export class MeshStream {
  readonly duplex: StreamDuplex
  readonly parser = new ResponseParser()
  /** Requests this stream carried (a reused stream may have been closed by the service
   * just as the next request was written). */
  requests = 0
  /** How long it may stay idle: IDLE_STREAM_TIMEOUT_MS, or less when the service says
   * (`Keep-Alive: timeout=N`) it closes idle connections sooner. */
  idleTimeoutMs = IDLE_STREAM_TIMEOUT_MS
  private user?: StreamUser
  private drop?: () => void

  constructor(duplex: StreamDuplex) {
    this.duplex = duplex
    duplex.on('data', (chunk: Buffer) => {
      if (this.user != null) this.user.onData(chunk)
      else this.dropIdle()
    })
    duplex.on('end', () => {
      if (this.user != null) this.user.onEnd()
      else this.dropIdle()
    })
    duplex.on('close', () => {
      this.parser.close()
      if (this.user != null) this.user.onClose()
      else this.dropIdle()
    })
    duplex.on('error', (err: Error) => this.user?.onError(err))
    // The idle timer stays armed while the stream is used (each read and write re-arms it):
    // it counts only when the stream is parked.
    duplex.on('timeout', () => this.dropIdle())
  }

  get usable(): boolean {
    return !this.duplex.destroyed && !this.duplex.readableEnded && !this.duplex.writableEnded
  }

  /** `user` hears the stream's events until it detaches. */
  attach(user: StreamUser): void {
    this.user = user
  }

  detach(user: StreamUser): void {
    if (this.user === user) this.user = undefined
  }

  /** Idle from now on: `drop` is called once if the stream times out, ends, closes or
   * receives bytes nobody asked for (then it is no longer in step with its requests). */
  park(timeoutMs: number, drop: () => void): void {
    this.drop = drop
    this.duplex.setTimeout(timeoutMs)
  }

  /** Leaves the idle state (reused, or dropped). */
  take(): void {
    this.drop = undefined
  }

  private dropIdle(): void {
    const drop = this.drop
    if (drop == null) return
    this.drop = undefined
    drop()
  }
}

/**
 * The warm streams to one instance: a stream freed by its request is kept (the most
 * recently used first, each for at most IDLE_STREAM_TIMEOUT_MS) and reused without a
 * round trip; a new one is opened (and its preface read: the instance reached its
 * service) when none is idle. Idle streams have no cap of their own below the slots':
 * with one (64 was tried), the responses of a burst of more concurrent requests freed
 * their streams together, the surplus was closed, and the next burst reopened as many
 * (a stream's open and close, on both proxies and the service, per request above it:
 * wrk at 128 connections fell to a third of the req/s at 32).
 *
 * Streams, those being opened included, hold a StreamSlots slot: beyond
 * MAX_STREAMS_PER_INSTANCE a request waits for one to close, and while some wait, a
 * stream freed by its request is closed (rather than kept idle) to pass its slot on.
 */
export class MeshAgent {
  private readonly libp2p: Libp2p
  private readonly peer: PeerId
  private readonly onStreamOpened?: () => void
  private readonly idle: MeshStream[] = []
  private destroyed = false
  readonly slots = new StreamSlots(
    MAX_STREAMS_PER_INSTANCE,
    MAX_STREAM_WAITERS_PER_INSTANCE,
    STREAM_SLOT_WAIT_MS,
  )

  constructor(init: MeshAgentInit) {
    this.libp2p = init.libp2p
    this.peer = init.peer
    this.onStreamOpened = init.onStreamOpened
  }

  /** Streams kept idle now. */
  get idleStreams(): number {
    return this.idle.length
  }

  /**
   * A stream for one request: a warm one, or a new one once its instance said it reached
   * its service. Rejects with ProxyError: ERR_SERVICE_UNREACHABLE (the instance's service
   * refused), ERR_INSTANCE_BUSY (no slot in time), ERR_INSTANCE_UNREACHABLE. Nothing of a
   * request was sent when it rejects.
   */
  async acquire(): Promise<MeshStream> {
    for (;;) {
      const warm = this.idle.pop()
      if (warm == null) break
      warm.take()
      if (!warm.usable) {
        close(warm)
        continue
      }
      return warm
    }
    if (this.destroyed) throw new ProxyError('ERR_INSTANCE_UNREACHABLE', 'instance forgotten')
    await this.slots.acquire()
    let duplex: StreamDuplex
    try {
      const stream = await this.libp2p.dialProtocol(this.peer, HTTP_PROTOCOL, {
        signal: AbortSignal.timeout(OPEN_STREAM_TIMEOUT_MS),
        maxOutboundStreams: MAX_HTTP_STREAMS_PER_CONNECTION,
      })
      duplex = new StreamDuplex(stream, { allowHalfOpen: false })
    } catch (err) {
      this.slots.release()
      // Another agent's streams fill the connection: busy, not unreachable.
      const e = err as Error
      if (e.name === 'TooManyOutboundProtocolStreamsError')
        throw new ProxyError('ERR_INSTANCE_BUSY', e.message, { cause: e })
      throw new ProxyError('ERR_INSTANCE_UNREACHABLE', `${this.peer}: ${e.message}`, { cause: e })
    }
    duplex.once('close', () => this.slots.release())
    // A request in progress hears its stream's errors through its own listener; a stream
    // carrying none (warm, or being closed) cut with an error is simply gone ('close'
    // follows) and must not take the gateway down with an unhandled 'error'.
    duplex.on('error', () => {})
    this.onStreamOpened?.()
    try {
      await readPreface(duplex)
    } catch (err) {
      duplex.destroy()
      throw err
    }
    return new MeshStream(duplex)
  }

  /** A stream whose exchange completed cleanly, for the next request (or closed). */
  release(s: MeshStream): void {
    if (!s.usable) {
      s.duplex.destroy()
      return
    }
    if (this.destroyed || this.slots.waiting > 0 || s.idleTimeoutMs <= 0) {
      close(s)
      return
    }
    this.idle.push(s)
    s.park(s.idleTimeoutMs, () => {
      const i = this.idle.indexOf(s)
      if (i >= 0) this.idle.splice(i, 1)
      close(s)
    })
  }

  /** Closes every idle stream and fails requests waiting for a slot (instance forgotten). */
  destroy(): void {
    this.destroyed = true
    this.slots.close()
    for (const s of this.idle.splice(0)) {
      s.take()
      close(s)
    }
  }
}

/** Ends a stream cleanly (the instance then closes its service connection, and the
 * stream); reset if that does not happen in time. */
function close(s: MeshStream): void {
  const d = s.duplex
  if (d.destroyed) return
  if (!d.writableEnded) d.end()
  d.resume() // whatever still arrives is dropped, and the end is seen
  d.setTimeout(CLOSE_TIMEOUT_MS, () => d.destroy())
}

/** How long a stream being closed may take to close both ways. */
const CLOSE_TIMEOUT_MS = 5_000

/**
 * A stream's idle time after a response with these headers: a service announcing
 * `Keep-Alive: timeout=N` closes idle connections after N s, so the stream is given up a
 * second before (as Node's Agent does), never more than IDLE_STREAM_TIMEOUT_MS.
 */
export function idleTimeoutFor(rawHeaders: string[]): number {
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if (rawHeaders[i].length !== 10 || rawHeaders[i].toLowerCase() !== 'keep-alive') continue
    const m = /(?:^|[\s,])timeout=(\d+)/i.exec(rawHeaders[i + 1])
    if (m == null) continue
    const ms = Number(m[1]) * 1000 - 1000
    return Math.max(0, Math.min(IDLE_STREAM_TIMEOUT_MS, ms))
  }
  return IDLE_STREAM_TIMEOUT_MS
}
