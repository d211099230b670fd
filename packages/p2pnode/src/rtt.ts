import { randomBytes } from 'node:crypto'
import type { Libp2p, PeerId } from '@libp2p/interface'
import { PING_PROTOCOL } from '@libp2p/ping'
import { RTT_PROBE_BYTES, RTT_PROBE_TIMEOUT_MS } from './constants.ts'

/**
 * Round-trip time to `peer` in seconds over the existing overlay connection, timed with
 * the monotonic high-resolution clock from the first byte sent to the last echoed
 * (libp2p's own ping reports whole milliseconds, which is 0 on a LAN).
 * The remote side is the standard ping protocol handler every mesh node runs.
 */
export async function probeRtt(
  libp2p: Libp2p,
  peer: PeerId,
  options: { signal?: AbortSignal } = {},
): Promise<number> {
  const signal = AbortSignal.any([
    AbortSignal.timeout(RTT_PROBE_TIMEOUT_MS),
    ...(options.signal != null ? [options.signal] : []),
  ])
  const stream = await libp2p.dialProtocol(peer, PING_PROTOCOL, { signal })
  const payload = randomBytes(RTT_PROBE_BYTES)
  const chunks: Buffer[] = []
  let received = 0
  const { promise, resolve, reject } = Promise.withResolvers<number>()
  const onMessage = (evt: { data: { subarray(): Uint8Array } }): void => {
    const chunk = Buffer.from(evt.data.subarray())
    chunks.push(chunk)
    received += chunk.byteLength
    if (received >= RTT_PROBE_BYTES) resolve(performance.now())
  }
  const onClose = (): void => reject(new Error('ping stream closed before the echo'))
  const onAbort = (): void => reject(signal.reason)
  stream.addEventListener('message', onMessage)
  stream.addEventListener('close', onClose)
  signal.addEventListener('abort', onAbort)
  try {
    const start = performance.now()
    stream.send(payload)
    const end = await promise
    if (!Buffer.concat(chunks).subarray(0, RTT_PROBE_BYTES).equals(payload)) {
      throw new Error('ping echo does not match what was sent')
    }
    return (end - start) / 1000
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
