import { randomBytes } from 'node:crypto'
import type {
  ComponentLogger,
  Libp2p,
  PeerId,
  Stream,
  StreamHandlerOptions,
} from '@libp2p/interface'
import { PING_PROTOCOL } from '@libp2p/ping'
import {
  MAX_RTT_SAMPLES,
  RTT_ECHO_LIFETIME_MS,
  RTT_MAX_STREAMS_PER_CONNECTION,
  RTT_PROBE_BYTES,
  RTT_PROBE_TIMEOUT_MS,
  RTT_PROTOCOL,
} from './constants.ts'

export interface RttProbeOptions {
  signal?: AbortSignal
  /**
   * Pings sent one after the other on the same stream; the smallest RTT is returned
   * (default 1). A busy process adds its own delay to single samples (timers, GC, other
   * work on the event loop): the minimum of a few is the path's RTT.
   */
  samples?: number
}

/**
 * Round-trip time to `peer` in seconds over the existing overlay connection, timed with
 * the monotonic high-resolution clock from the first byte sent to the last echoed
 * (libp2p's own ping reports whole milliseconds, which is 0 on a LAN).
 *
 * The remote side is the mesh's own echo protocol (`/mtc/rtt/1.0.0`, see `rttService`),
 * not libp2p's ping: libp2p's connection monitor used that protocol too, which allows one
 * outbound stream per connection, and a probe running while the monitor pinged made the
 * monitor abort the whole connection. A peer of an older release without the echo
 * protocol is probed over `/ipfs/ping/1.0.0` instead (same wire format).
 */
export async function probeRtt(
  libp2p: Libp2p,
  peer: PeerId,
  options: RttProbeOptions = {},
): Promise<number> {
  const samples = Math.min(Math.max(1, Math.floor(options.samples ?? 1)), MAX_RTT_SAMPLES)
  const signal = AbortSignal.any([
    AbortSignal.timeout(RTT_PROBE_TIMEOUT_MS),
    ...(options.signal != null ? [options.signal] : []),
  ])
  const stream = await libp2p.dialProtocol(peer, [RTT_PROTOCOL, PING_PROTOCOL], { signal })
  try {
    return await echoRounds(stream, samples, signal)
  } catch (err) {
    stream.abort(err as Error)
    throw err
  } finally {
    if (stream.status === 'open') await stream.close().catch(() => {})
  }
}

/**
 * Sends `samples` pings of RTT_PROBE_BYTES random bytes one after the other on `stream`,
 * each answered by its echo; the smallest round trip, in seconds. Leaves the stream open.
 */
export async function echoRounds(
  stream: Stream,
  samples: number,
  signal: AbortSignal,
): Promise<number> {
  let round!: {
    payload: Buffer
    chunks: Buffer[]
    received: number
    echoed: PromiseWithResolvers<number>
  }
  const onMessage = (evt: { data: { subarray(): Uint8Array } }): void => {
    const chunk = Buffer.from(evt.data.subarray())
    round.chunks.push(chunk)
    round.received += chunk.byteLength
    if (round.received >= RTT_PROBE_BYTES) round.echoed.resolve(performance.now())
  }
  const onClose = (): void => round.echoed.reject(new Error('ping stream closed before the echo'))
  const onAbort = (): void => round.echoed.reject(signal.reason)
  stream.addEventListener('message', onMessage)
  stream.addEventListener('close', onClose)
  signal.addEventListener('abort', onAbort)
  try {
    let best = Number.POSITIVE_INFINITY
    for (let i = 0; i < samples; i++) {
      round = {
        payload: randomBytes(RTT_PROBE_BYTES),
        chunks: [],
        received: 0,
        echoed: Promise.withResolvers<number>(),
      }
      if (signal.aborted) throw signal.reason
      const start = performance.now()
      stream.send(round.payload)
      const end = await round.echoed.promise
      // The echo of one ping is exactly its payload: nothing more may arrive in a round.
      if (!Buffer.concat(round.chunks).equals(round.payload)) {
        throw new Error('ping echo does not match what was sent')
      }
      best = Math.min(best, end - start)
    }
    return best / 1000
  } finally {
    stream.removeEventListener('message', onMessage)
    stream.removeEventListener('close', onClose)
    signal.removeEventListener('abort', onAbort)
  }
}

/** Stream limits of the echo protocol, for the handler and for the probing side. */
export const RTT_STREAM_LIMITS: StreamHandlerOptions = {
  maxInboundStreams: RTT_MAX_STREAMS_PER_CONNECTION,
  maxOutboundStreams: RTT_MAX_STREAMS_PER_CONNECTION,
  runOnLimitedConnection: true,
}

/**
 * Echoes what arrives on one `/mtc/rtt/1.0.0` stream back to the sender until the sender
 * closes. Bounded: at most MAX_RTT_SAMPLES pings' worth of bytes, and the stream is reset
 * after RTT_ECHO_LIFETIME_MS (a probe gives up long before).
 */
export async function answerRtt(stream: Stream): Promise<void> {
  const limit = MAX_RTT_SAMPLES * RTT_PROBE_BYTES
  const lifetime = setTimeout(
    () => stream.abort(new Error(`rtt stream open longer than ${RTT_ECHO_LIFETIME_MS} ms`)),
    RTT_ECHO_LIFETIME_MS,
  )
  try {
    let echoed = 0
    for await (const chunk of stream) {
      echoed += chunk.byteLength
      if (echoed > limit) throw new Error(`rtt stream sent more than ${limit} bytes`)
      stream.send(chunk)
    }
    await stream.close()
  } catch (err) {
    stream.abort(err as Error)
  } finally {
    clearTimeout(lifetime)
  }
}

interface RttComponents {
  registrar: {
    handle(
      protocol: string,
      handler: (stream: Stream) => void | Promise<void>,
      options?: StreamHandlerOptions,
    ): Promise<void>
    unhandle(protocol: string): Promise<void>
  }
  logger: ComponentLogger
}

/** The libp2p service that answers the mesh's RTT probes and liveness pings. */
export class RttService {
  private readonly components: RttComponents

  constructor(components: RttComponents) {
    this.components = components
  }

  readonly [Symbol.toStringTag] = '@mtc/rtt'

  async start(): Promise<void> {
    await this.components.registrar.handle(RTT_PROTOCOL, answerRtt, RTT_STREAM_LIMITS)
  }

  async stop(): Promise<void> {
    await this.components.registrar.unhandle(RTT_PROTOCOL)
  }
}

export function rttService(): (components: RttComponents) => RttService {
  return (components) => new RttService(components)
}
