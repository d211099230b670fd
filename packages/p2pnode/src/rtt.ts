import { randomBytes } from 'node:crypto'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { PING_PROTOCOL } from '@libp2p/ping'
import { MAX_RTT_SAMPLES, RTT_PROBE_BYTES, RTT_PROBE_TIMEOUT_MS } from './constants.ts'

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
 * The remote side is the standard ping protocol handler every mesh node runs.
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
  const stream = await libp2p.dialProtocol(peer, PING_PROTOCOL, { signal })
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
  } catch (err) {
    stream.abort(err as Error)
    throw err
  } finally {
    stream.removeEventListener('message', onMessage)
    stream.removeEventListener('close', onClose)
    signal.removeEventListener('abort', onAbort)
    if (stream.status === 'open') await stream.close().catch(() => {})
  }
}
