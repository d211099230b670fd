import type { ClientRequest, ClientRequestArgs } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { http } from '@mtc/p2pnode'
import {
  HTTP_PROTOCOL,
  IDLE_STREAM_TIMEOUT_MS,
  MAX_HTTP_STREAMS_PER_CONNECTION,
  MAX_IDLE_STREAMS_PER_INSTANCE,
  MAX_STREAMS_PER_INSTANCE,
  OPEN_STREAM_TIMEOUT_MS,
} from './constants.ts'
import { StreamDuplex } from './stream-duplex.ts'

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
 */
export class MeshAgent extends http.Agent {
  private readonly libp2p: Libp2p
  private readonly peer: PeerId
  private readonly onStreamOpened?: () => void

  constructor(init: MeshAgentInit) {
    super({
      keepAlive: true,
      maxSockets: MAX_STREAMS_PER_INSTANCE,
      maxFreeSockets: MAX_IDLE_STREAMS_PER_INSTANCE,
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
    this.libp2p
      .dialProtocol(this.peer, HTTP_PROTOCOL, {
        signal: AbortSignal.timeout(OPEN_STREAM_TIMEOUT_MS),
        maxOutboundStreams: MAX_HTTP_STREAMS_PER_CONNECTION,
      })
      .then(
        (stream) => {
          this.onStreamOpened?.()
          callback?.(null, new StreamDuplex(stream, { allowHalfOpen: false }))
        },
        (err: Error) => callback?.(err, undefined as unknown as Duplex),
      )
    return undefined
  }

  /** An idle warm stream closes after IDLE_STREAM_TIMEOUT_MS (before the instance would). */
  override keepSocketAlive(socket: Duplex): boolean {
    const keep = (http.Agent.prototype.keepSocketAlive as (s: Duplex) => boolean).call(this, socket)
    ;(socket as StreamDuplex).setTimeout(IDLE_STREAM_TIMEOUT_MS)
    return keep !== false
  }

  override reuseSocket(socket: Duplex, request: ClientRequest): void {
    super.reuseSocket(socket as never, request)
    ;(socket as StreamDuplex).setTimeout(0)
  }
}
