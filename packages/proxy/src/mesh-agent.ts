import type { ClientRequest, ClientRequestArgs } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { http } from '@mtc/p2pnode'
import {
  HTTP_PROTOCOL,
  IDLE_STREAM_TIMEOUT_MS,
  MAX_HTTP_STREAMS_PER_CONNECTION,
  MAX_IDLE_STREAMS_PER_INSTANCE,
  MAX_STREAM_WAITERS_PER_INSTANCE,
  MAX_STREAMS_PER_INSTANCE,
  OPEN_STREAM_TIMEOUT_MS,
  STREAM_SLOT_WAIT_MS,
} from './constants.ts'
import { ProxyError } from './errors.ts'
import { StreamDuplex } from './stream-duplex.ts'
import { readPreface } from './stream-preface.ts'
import { StreamSlots } from './stream-slots.ts'

export interface MeshAgentInit {
  libp2p: Libp2p
  peer: PeerId
  /** Called for every new stream (warm ones are reused without it). */
  onStreamOpened?: () => void
}

/**
 * Node's HTTP Agent for one instance, whose "sockets" are libp2p streams: Node's own
 * HTTP client does the framing and keep-alive, and the Agent's pool of idle sockets is
 * the pool of warm streams (negotiated once, reused without a round trip).
 *
 * Node's Agent counts a socket against maxSockets only once it exists, and a stream is
 * made asynchronously: a burst would open a stream per request, past yamux's and the
 * instance's caps. So streams, those being opened included, hold a StreamSlots slot;
 * beyond MAX_STREAMS_PER_INSTANCE a request waits for one to close, and while some
 * wait, a stream freed by its request is closed (rather than kept idle) to pass its
 * slot on.
 */
export class MeshAgent extends http.Agent {
  private readonly libp2p: Libp2p
  private readonly peer: PeerId
  private readonly onStreamOpened?: () => void
  readonly slots = new StreamSlots(
    MAX_STREAMS_PER_INSTANCE,
    MAX_STREAM_WAITERS_PER_INSTANCE,
    STREAM_SLOT_WAIT_MS,
  )

  constructor(init: MeshAgentInit) {
    super({
      keepAlive: true,
      maxSockets: MAX_STREAMS_PER_INSTANCE,
      maxFreeSockets: MAX_IDLE_STREAMS_PER_INSTANCE,
      // Idle streams only (createConnection ignores it); a Keep-Alive hint may shorten it.
      timeout: IDLE_STREAM_TIMEOUT_MS,
      // The most recently used stream first: a quiet period lets the others time out.
      scheduling: 'lifo',
    })
    this.libp2p = init.libp2p
    this.peer = init.peer
    this.onStreamOpened = init.onStreamOpened
  }

  /** Opens a stream to the instance (dialling it if needed), asynchronously. */
  override createConnection(
    _options: ClientRequestArgs,
    callback?: (err: Error | null, stream: Duplex) => void,
  ): Duplex | null | undefined {
    const fail = (err: Error): void => callback?.(err, undefined as unknown as Duplex)
    this.slots.acquire().then(() => {
      this.libp2p
        .dialProtocol(this.peer, HTTP_PROTOCOL, {
          signal: AbortSignal.timeout(OPEN_STREAM_TIMEOUT_MS),
          maxOutboundStreams: MAX_HTTP_STREAMS_PER_CONNECTION,
        })
        .then(
          (stream) => {
            this.onStreamOpened?.()
            const duplex = new StreamDuplex(stream, { allowHalfOpen: false })
            duplex.once('close', () => this.slots.release())
            // The instance says first whether its service took the connection: a refusal
            // (or no valid preface) fails the request before it has a socket, so nothing
            // was delivered and it may go elsewhere.
            readPreface(duplex).then(
              () => callback?.(null, duplex),
              (err: Error) => {
                duplex.destroy()
                fail(err)
              },
            )
          },
          (err: Error) => {
            this.slots.release()
            // Another agent's streams fill the connection: busy, not unreachable.
            fail(err.name === 'TooManyOutboundProtocolStreamsError' ? busy(err) : err)
          },
        )
    }, fail)
    return undefined
  }

  /** An idle warm stream closes after IDLE_STREAM_TIMEOUT_MS or the service's Keep-Alive
   * hint (before the service would); it closes at once when requests wait for a slot. */
  override keepSocketAlive(socket: Duplex): boolean {
    if (this.slots.waiting > 0) return false
    const keep = (http.Agent.prototype.keepSocketAlive as (s: Duplex) => boolean).call(this, socket)
    return keep !== false
  }

  override destroy(): void {
    this.slots.close()
    super.destroy()
  }

  override reuseSocket(socket: Duplex, request: ClientRequest): void {
    super.reuseSocket(socket as never, request)
    ;(socket as StreamDuplex).setTimeout(0)
  }
}

function busy(err: Error): ProxyError {
  return new ProxyError('ERR_INSTANCE_BUSY', err.message, { cause: err })
}
