import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import {
  INTER_SPREAD_MS,
  INTRA_MIN_MS,
  INTRA_SPREAD_MS,
  parseSpec,
  regionOf,
  regionsTopology,
  THREE_REGIONS,
} from '../src/index.ts'

/** The 30-host WAN of the scale scenarios (src/regions.ts): every pair in its band. */
describe('regionsTopology', () => {
  it('gives the issue-18 WAN: 30 hosts, every pair an RTT in its band', () => {
    const spec = regionsTopology(THREE_REGIONS)
    assert.equal(spec.hosts.length, 30)
    assert.deepEqual(spec.hosts.slice(0, 3), ['a0', 'a1', 'a2'])
    const rtt = parseSpec(spec) // also the topology's own validation
    const base: Record<string, number> = { ab: 40, bc: 70, ac: 110 }
    const seen = new Set<number>()
    for (const [i, a] of spec.hosts.entries()) {
      for (const [j, b] of spec.hosts.entries()) {
        if (i === j) continue
        const ms = rtt[i][j]
        seen.add(ms)
        const [ra, rb] = [regionOf(a), regionOf(b)].sort()
        if (ra === rb) {
          assert.ok(ms >= INTRA_MIN_MS && ms <= INTRA_MIN_MS + INTRA_SPREAD_MS, `${a}-${b}: ${ms}`)
        } else {
          const lo = base[`${ra}${rb}`]
          assert.ok(ms >= lo && ms <= lo + INTER_SPREAD_MS, `${a}-${b}: ${ms}`)
        }
      }
    }
    // Not one RTT per band: nearest instances differ from client to client.
    assert.ok(seen.size > 10, `only ${seen.size} distinct RTTs`)
  })

  it('refuses two regions without a base RTT', () => {
    assert.throws(
      () => regionsTopology({ regions: ['a', 'b'], hostsPerRegion: 2, interRtt: {} }),
      /no RTT between a and b/,
    )
  })
})
