import type { TopologySpec } from './topology.ts'

/**
 * A WAN of regions: `regions` × `hostsPerRegion` hosts named `<region><i>` (a0…a9,
 * b0…). Hosts of one region are 2–10 ms apart; hosts of two regions the pair's base
 * RTT plus 0–8 ms. Deterministic (no randomness), so every run has the same WAN.
 */
export interface RegionsSpec {
  /** Region names, one letter each by convention: `['a', 'b', 'c']`. */
  regions: string[]
  hostsPerRegion: number
  /** Base RTT (ms) between two regions, keyed `a-b` in either order. */
  interRtt: Record<string, number>
}

/** Intra-region RTTs lie in [INTRA_MIN_MS, INTRA_MIN_MS + INTRA_SPREAD_MS]. */
export const INTRA_MIN_MS = 2
export const INTRA_SPREAD_MS = 8
/** Inter-region RTTs lie in [base, base + INTER_SPREAD_MS]. */
export const INTER_SPREAD_MS = 8

/** The 30 hosts: 3 regions of 10; a–b 40 ms, b–c 70 ms, a–c 110 ms (+0–8). */
export const THREE_REGIONS: RegionsSpec = {
  regions: ['a', 'b', 'c'],
  hostsPerRegion: 10,
  interRtt: { 'a-b': 40, 'b-c': 70, 'a-c': 110 },
}

export function hostName(region: string, i: number): string {
  return `${region}${i}`
}

/** The region of a host named by {@link hostName}. */
export function regionOf(host: string): string {
  return host.replace(/\d+$/, '')
}

/** The hosts of one region, in index order. */
export function regionHosts(spec: RegionsSpec, region: string): string[] {
  return Array.from({ length: spec.hostsPerRegion }, (_, i) => hostName(region, i))
}

function interBase(spec: RegionsSpec, r: string, s: string): number {
  const base = spec.interRtt[`${r}-${s}`] ?? spec.interRtt[`${s}-${r}`]
  if (base == null) throw new Error(`regions: no RTT between ${r} and ${s}`)
  return base
}

/** Every pair's RTT, so no pair is left at 0 ms. */
export function regionsTopology(spec: RegionsSpec): TopologySpec {
  const hosts = spec.regions.flatMap((r) => regionHosts(spec, r))
  const rtt: Record<string, number> = {}
  spec.regions.forEach((r, ri) => {
    spec.regions.forEach((s, si) => {
      if (si < ri) return
      for (let i = 0; i < spec.hostsPerRegion; i++) {
        for (let j = 0; j < spec.hostsPerRegion; j++) {
          if (ri === si && j <= i) continue
          // A spread that differs per pair but needs no random generator.
          const spread =
            (i * 7 + j * 3 + ri + si) % (ri === si ? INTRA_SPREAD_MS + 1 : INTER_SPREAD_MS + 1)
          rtt[`${hostName(r, i)}-${hostName(s, j)}`] =
            ri === si ? INTRA_MIN_MS + spread : interBase(spec, r, s) + spread
        }
      }
    })
  })
  return { hosts, rtt }
}
