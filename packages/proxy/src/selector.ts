import { ERROR_PENALTY_MS, LATENCY_EWMA_GAIN, OBSERVATION_DECAY_MS } from './constants.ts'
import type { Requirements } from './requirements.ts'

/**
 * What this proxy knows about the latency of one instance:
 * - `rttMs`: EWMA of background ping RTTs (the network distance; the requirements'
 *   soft and hard limits apply to it);
 * - observed request latency (request sent → response head), EWMA, which includes the
 *   service's own time. What requests taught fades back towards the RTT with time
 *   constant OBSERVATION_DECAY_MS, so an instance not used lately is tried again;
 * - errors: each adds ERROR_PENALTY_MS, fading the same way, so a fast-failing instance
 *   does not look attractive.
 */
export class LatencyStats {
  rttMs: number | undefined
  private observedMs: number | undefined
  private observedAt = 0
  private errors = 0
  private errorAt = 0

  recordRtt(ms: number): void {
    this.rttMs = this.rttMs == null ? ms : this.rttMs + LATENCY_EWMA_GAIN * (ms - this.rttMs)
  }

  recordLatency(ms: number, now = performance.now()): void {
    const current = this.observed(now)
    this.observedMs = current == null ? ms : current + LATENCY_EWMA_GAIN * (ms - current)
    this.observedAt = now
  }

  recordError(now = performance.now()): void {
    this.errors = this.errorWeight(now) + 1
    this.errorAt = now
  }

  /** Expected latency of the next request in ms, penalty included (lower is better). */
  score(now = performance.now()): number {
    const rtt = this.rttMs ?? 0
    const observed = this.observed(now) ?? rtt
    return Math.max(rtt, observed) + ERROR_PENALTY_MS * this.errorWeight(now)
  }

  private observed(now: number): number | undefined {
    if (this.observedMs == null) return undefined
    const rtt = this.rttMs ?? 0
    const fade = Math.exp(-(now - this.observedAt) / OBSERVATION_DECAY_MS)
    return rtt + (this.observedMs - rtt) * fade
  }

  private errorWeight(now: number): number {
    return this.errors * Math.exp(-(now - this.errorAt) / OBSERVATION_DECAY_MS)
  }
}

export interface Candidate {
  id: string
  /** Answered its last probe and reports a ready service. */
  usable: boolean
  stats: LatencyStats
}

export interface Ranking<C extends Candidate> {
  /** Usable instances within the hard limit, best first. */
  ranked: C[]
  /** Usable instances left out for being above the hard limit. */
  tooFar: number
  /** The best one is above the soft limit: a nearer instance should be started. */
  aboveSoft: boolean
}

/** Orders usable instances by expected latency; drops those above the hard RTT limit. */
export function rank<C extends Candidate>(
  candidates: Iterable<C>,
  requirements: Requirements,
  exclude: ReadonlySet<string> = new Set(),
  now = performance.now(),
): Ranking<C> {
  const scored: Array<{ c: C; score: number }> = []
  let tooFar = 0
  for (const c of candidates) {
    if (!c.usable || exclude.has(c.id) || c.stats.rttMs == null) continue
    if (requirements.hardRttMs != null && c.stats.rttMs > requirements.hardRttMs) {
      tooFar++
      continue
    }
    scored.push({ c, score: c.stats.score(now) })
  }
  scored.sort((x, y) => x.score - y.score)
  const best = scored[0]?.c
  const aboveSoft =
    best != null &&
    requirements.softRttMs != null &&
    best.stats.rttMs != null &&
    best.stats.rttMs > requirements.softRttMs
  return { ranked: scored.map((s) => s.c), tooFar, aboveSoft }
}

/**
 * Rolling updates: when some usable candidate runs `imageId` (the registry's current
 * image), only those; otherwise all (the update has not reached this service yet, or
 * failed: the previous image keeps serving).
 */
export function preferImage<C extends Candidate & { imageId?: string }>(
  candidates: Iterable<C>,
  imageId: string | undefined,
  exclude: ReadonlySet<string> = new Set(),
): C[] {
  const all = [...candidates]
  if (imageId == null) return all
  const current = all.filter((c) => c.imageId === imageId)
  return current.some((c) => c.usable && !exclude.has(c.id)) ? current : all
}
