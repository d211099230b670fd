import type { Libp2p, PeerId } from '@libp2p/interface'
import { raceSignal } from './abort.ts'
import { probeRtt } from './rtt.ts'

/** A status query of some protocol: queryStatus (instances), allocatorStatus (allocators). */
export type StatusQuery<S> = (
  libp2p: Libp2p,
  peer: PeerId,
  options: { signal: AbortSignal },
) => Promise<S>

export interface PeerProbe<S> {
  status: S
  /** The smallest of the RTT samples, in milliseconds. */
  rttMs: number
}

/**
 * Dials `peer` and asks its status, then measures its RTT (`samples` pings, the smallest
 * kept): one after the other, as a status answer arriving during a ping would add to its
 * RTT. Both are raced against `signal` (libp2p calls do not always honour it); rejects
 * with the first failure.
 */
export async function probeStatusAndRtt<S>(
  libp2p: Libp2p,
  peer: PeerId,
  query: StatusQuery<S>,
  options: { signal: AbortSignal; samples?: number },
): Promise<PeerProbe<S>> {
  const { signal, samples } = options
  const status = await raceSignal(query(libp2p, peer, { signal }), signal)
  const rtt = await raceSignal(probeRtt(libp2p, peer, { signal, samples }), signal)
  return { status, rttMs: rtt * 1000 }
}
