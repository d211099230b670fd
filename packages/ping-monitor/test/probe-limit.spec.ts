import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '@libp2p/interface'
import type { MeshNode } from '@mtc/p2pnode'
import { waitFor } from '@mtc/testkit'
import { Registry } from 'prom-client'
import { PingMonitor } from '../src/monitor.ts'

/**
 * README: "At most 64 probes are in flight at once" (issue 19.8). 200 connected peers
 * cannot run on 2 cores, so a fast unit test: a stand-in node whose RTT probe takes 20 ms
 * and counts how many run at once; everything else is the real PingMonitor.
 */
const PEERS = 200
/** The README's figure. */
const README_LIMIT = 64
const PROBE_MS = 20

function fakeNode() {
  const peers = Array.from({ length: PEERS }, (_, i) => ({ toString: () => `peer-${i}` }))
  const seen = { inFlight: 0, most: 0, probed: 0 }
  const node = {
    libp2p: {
      getPeers: () => peers,
      addEventListener: () => {},
      removeEventListener: () => {},
    },
    rtt: async (_peer: unknown, { signal }: { signal?: AbortSignal }) => {
      seen.inFlight++
      seen.most = Math.max(seen.most, seen.inFlight)
      try {
        await sleep(PROBE_MS, undefined, { signal })
        return PROBE_MS / 1000
      } finally {
        seen.inFlight--
        seen.probed++
      }
    },
  }
  return { node: node as unknown as MeshNode, seen }
}

const log = Object.assign(() => {}, {
  error: () => {},
  trace: () => {},
  enabled: false,
}) as unknown as Logger

describe('ping-monitor probe rounds', () => {
  it(`probe ${PEERS} peers with at most ${README_LIMIT} in flight`, async () => {
    const { node, seen } = fakeNode()
    const monitor = new PingMonitor(node, { registry: new Registry(), log, intervalMs: 60_000 })
    monitor.start()
    try {
      await waitFor('one round over every peer', () => seen.probed >= PEERS, { timeoutMs: 30_000 })
    } finally {
      await monitor.stop()
    }
    assert.equal(seen.most, README_LIMIT)
    assert.equal(monitor.table.all().filter((e) => e.rttSeconds != null).length, PEERS)
  })
})
