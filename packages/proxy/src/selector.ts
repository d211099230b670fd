import {
  ERROR_PENALTY_MS,
  OBSERVATION_DECAY_MS,
  PEAK_SAMPLE_GAIN,
  RTT_DISTANCE_PROBES,
  RTT_SETTLE_PROBES,
} from './constants.ts'
import type { Requirements } from './requirements.ts'

/**
 * What this proxy knows about the latency and load of one instance:
 * - `rttMs`: the smallest RTT of the last RTT_DISTANCE_PROBES background probes (the
 *   network distance; the requirements' soft and hard limits apply to it). Not an
 *   average: a busy prober or a starved echo only ever adds to a sample (timers, GC,
 *   other work on either event loop), so an EWMA of raw samples drifted 3–5× above a
 *   2–10 ms path under load and dropped a region's own instance as too far (issue #18);
 *   the minimum is the path. A real rise counts once it is older than the window;
 * - observed request latency (request sent → response head), which includes the
 *   service's own time, as a peak-EWMA (Finagle's, as Linkerd uses it): a sample above
 *   the current value counts at once, one below pulls it down with a time-based weight of
 *   time constant OBSERVATION_DECAY_MS. With no sample for a while it fades back towards
 *   the RTT the same way, so an instance not used lately is tried again;
 * - errors: each adds ERROR_PENALTY_MS, fading the same way, so a fast-failing instance
 *   does not look attractive;
 * - `inFlight`: requests this proxy has on the instance now (begin/end around each attempt).
 */
export class LatencyStats {
  /** The last RTT_DISTANCE_PROBES probe RTTs, oldest first. */
  private readonly rtts: number[] = []
  /** The smallest of `rtts`, kept when a probe is recorded: ranking reads it per request. */
  private minRtt: number | undefined
  /** Attempts of this proxy on the instance that have not ended. */
  inFlight = 0
  private observedMs: number | undefined
  private observedAt = 0
  private errors = 0
  private errorAt = 0

  recordRtt(ms: number): void {
    this.rtts.push(ms)
    if (this.rtts.length > RTT_DISTANCE_PROBES) this.rtts.shift()
    this.minRtt = Math.min(...this.rtts)
  }

  /** Enough probes to judge the distance against a hard limit (RTT_SETTLE_PROBES). */
  get settled(): boolean {
    return this.rtts.length >= RTT_SETTLE_PROBES
  }

  /** The network distance in ms: the smallest recent probe RTT (none probed yet: undefined). */
  get rttMs(): number | undefined {
    return this.minRtt
  }

  recordLatency(ms: number, now = performance.now()): void {
    const current = this.observedMs
    if (current == null || ms >= current) {
      this.observedMs = ms
    } else {
      // Time-based weight (τ = 10 s), but each sample moves it at least by PEAK_SAMPLE_GAIN:
      // under heavy traffic it follows the typical latency, not the worst of the last seconds.
      const keep = Math.min(
        Math.exp(-(now - this.observedAt) / OBSERVATION_DECAY_MS),
        1 - PEAK_SAMPLE_GAIN,
      )
      this.observedMs = ms + (current - ms) * keep
    }
    this.observedAt = now
  }

  recordError(now = performance.now()): void {
    this.errors = this.errorWeight(now) + 1
    this.errorAt = now
  }

  /** An attempt on the instance starts... */
  begin(): void {
    this.inFlight++
  }

  /** ...and ends (answered, failed or cut). */
  end(): void {
    if (this.inFlight > 0) this.inFlight--
  }

  /** Expected latency of the next request in ms, penalty included (lower is better). */
  score(now = performance.now()): number {
    const rtt = this.rttMs ?? 0
    const observed = this.observed(now) ?? rtt
    return Math.max(rtt, observed) + ERROR_PENALTY_MS * this.errorWeight(now)
  }

  /** Whether a request taught anything yet (or it faded out entirely). */
  measured(now = performance.now()): boolean {
    return this.observed(now) != null
  }

  /**
   * What sending one more request here costs: expected latency × (in flight + 1). An
   * instance that no request measured yet takes one request at a time (Linkerd's rule): its
   * RTT alone would make it look fastest, and a new instance must not be flooded before
   * its first answer says what it is worth.
   */
  cost(now = performance.now()): number {
    if (this.inFlight > 0 && !this.measured(now)) return Number.POSITIVE_INFINITY
    return this.score(now) * (this.inFlight + 1)
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
  /**
   * Usable instances above the hard limit on fewer than RTT_SETTLE_PROBES probes: not used,
   * not judged too far yet (a first probe from a starved or starting prober is often late).
   */
  unsettled: number
  /** The nearest is above the soft limit (every one settled): a nearer one should be started. */
  aboveSoft: boolean
}

/**
 * Orders usable instances by cost (expected latency × (requests in flight + 1), see
 * LatencyStats.cost), cheapest first: a full scan, as a service has a few instances. At
 * low load the nearest gets every request; under load requests spill to the next ones in
 * proportion to their speed. Drops instances above the hard RTT limit. Ties keep the
 * candidates' order.
 */
export function rank<C extends Candidate>(
  candidates: Iterable<C>,
  requirements: Requirements,
  exclude: ReadonlySet<string> = new Set(),
  now = performance.now(),
): Ranking<C> {
  const scored: Array<{ c: C; score: number }> = []
  let tooFar = 0
  let unsettled = 0
  for (const c of candidates) {
    if (!c.usable || exclude.has(c.id) || c.stats.rttMs == null) continue
    if (requirements.hardRttMs != null && c.stats.rttMs > requirements.hardRttMs) {
      if (c.stats.settled) tooFar++
      else unsettled++
      continue
    }
    scored.push({ c, score: c.stats.cost(now) })
  }
  scored.sort((x, y) => (x.score === y.score ? 0 : x.score < y.score ? -1 : 1))
  // Distance, not load: the nearest usable one is above the soft limit — judged once every
  // one is settled (a late first probe read 20.3 ms for a 5 ms instance and started a
  // second one in the region).
  const nearest = Math.min(...scored.map((s) => s.c.stats.rttMs ?? 0))
  const aboveSoft =
    scored.length > 0 &&
    requirements.softRttMs != null &&
    nearest > requirements.softRttMs &&
    scored.every((s) => s.c.stats.settled)
  return { ranked: scored.map((s) => s.c), tooFar, unsettled, aboveSoft }
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
