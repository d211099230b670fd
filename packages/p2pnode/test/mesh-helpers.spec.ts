import assert from 'node:assert/strict'
import { after, describe, it } from 'node:test'
import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import { waitFor } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { Announcer } from '../src/announcer.ts'
import { STATUS_PROTOCOL } from '../src/constants.ts'
import { type DiscoveryKind, provide, streamProviders } from '../src/discovery.ts'
import { answerStatus, queryStatus } from '../src/instance-status.ts'
import { findReachableProvider, PeerLocator } from '../src/locator.ts'
import type { MeshNode } from '../src/node.ts'
import { probeStatusAndRtt } from '../src/probe.ts'
import { ProviderDirectory } from '../src/provider-directory.ts'
import { generatePsk, type Psk } from '../src/psk.ts'
import { startLoopbackNode } from '../src/testing.ts'

/**
 * The mesh helpers written once in p2pnode (issue 16 item 3): the streaming provider
 * lookup, the provider directory, the status + RTT probe, the announcer's schedule and
 * the locator, on real nodes sharing a PSK over loopback.
 */

const started: MeshNode[] = []
after(async () => {
  await Promise.all(started.map((n) => n.stop()))
})

/** The machine is shared and often loaded: bounds for what a quiet one does in a second. */
const SLOW = { timeoutMs: 60_000 }

const log: Logger = defaultLogger().forComponent('test:mesh-helpers')

async function startNode(psk: Psk, bootstraps: string[] = []): Promise<MeshNode> {
  const node = await startLoopbackNode({
    psk,
    bootstraps,
    bootstrapBackoffMs: { initial: 50, max: 200 },
  })
  started.push(node)
  return node
}

/** A bootstrap and `n` nodes connected to it (DHT servers all). */
async function smallMesh(n: number): Promise<{ psk: Psk; nodes: MeshNode[] }> {
  const psk = generatePsk()
  const boot = await startNode(psk)
  const nodes = await Promise.all(
    Array.from({ length: n }, () => startNode(psk, [boot.multiaddrs()[0]])),
  )
  await waitFor(
    'bootstraps connected',
    () => nodes.every((x) => x.connectedBootstraps().length === 1),
    SLOW,
  )
  // Each node connected to each: the DHT does not hang on the bootstrap alone.
  for (const a of nodes) {
    for (const b of nodes) if (a !== b) await a.libp2p.dial(multiaddr(b.multiaddrs()[0]))
  }
  return { psk, nodes }
}

/** Announces until the record is placed (the DHT may still be forming). */
async function announce(node: MeshNode, kind: DiscoveryKind, name = ''): Promise<void> {
  await waitFor(
    `${kind} ${name} announced`,
    async () => {
      await provide(node.libp2p, kind, name, { signal: AbortSignal.timeout(3000) })
      return true
    },
    SLOW,
  )
}

/** Until the DHT, seen from `from`, names every one of `providers`. */
async function untilFound(from: MeshNode, kind: DiscoveryKind, providers: MeshNode[], name = '') {
  await waitFor(
    `${kind} providers seen`,
    async () => {
      const seen = new Set<string>()
      for await (const p of streamProviders(from.libp2p, kind, name, {
        signal: AbortSignal.timeout(3000),
      })) {
        seen.add(p.toString())
      }
      return providers.every((p) => seen.has(p.peerId.toString()))
    },
    SLOW,
  )
}

/** A libp2p whose DHT lookup never answers and ignores its signal (as kad-dht may). */
function deafRouting(self: PeerId): Libp2p {
  return {
    peerId: self,
    contentRouting: {
      findProviders: async function* () {
        await new Promise(() => {})
      },
    },
  } as unknown as Libp2p
}

describe('streamProviders', () => {
  it('streams each provider once, never this node, with its addresses in the peer store', async () => {
    const { nodes } = await smallMesh(4)
    const [asker, ...providers] = nodes
    for (const p of providers) await announce(p, 'service', 'hello')
    await announce(asker, 'service', 'hello')
    await untilFound(asker, 'service', providers, 'hello')

    const got: string[] = []
    for await (const p of streamProviders(asker.libp2p, 'service', 'hello', {
      signal: AbortSignal.timeout(5000),
    })) {
      got.push(p.toString())
    }
    assert.equal(new Set(got).size, got.length, `a provider came twice: ${got}`)
    assert.ok(!got.includes(asker.peerId.toString()), 'this node is not its own provider')
    assert.deepEqual(got.toSorted(), providers.map((p) => p.peerId.toString()).toSorted())
    for (const p of providers) {
      const stored = await asker.libp2p.peerStore.get(p.peerId)
      assert.ok(stored.addresses.length > 0, `no address stored for ${p.peerId}`)
    }

    const limited: PeerId[] = []
    for await (const p of streamProviders(asker.libp2p, 'service', 'hello', {
      signal: AbortSignal.timeout(5000),
      limit: 2,
    })) {
      limited.push(p)
    }
    assert.equal(limited.length, 2)
  })

  it('ends with the signal even when the DHT ignores it', async () => {
    const { nodes } = await smallMesh(1)
    const started = performance.now()
    const lookup = (async () => {
      for await (const _ of streamProviders(deafRouting(nodes[0].peerId), 'allocator', '', {
        signal: AbortSignal.timeout(200),
      })) {
        // nothing comes
      }
    })()
    await assert.rejects(lookup, /TimeoutError|timed out|aborted/i)
    assert.ok(performance.now() - started < 15_000, 'the lookup outlived its signal')
  })
})

describe('ProviderDirectory', () => {
  it('lists providers, waits only when none is known, serves the cached list, honours limit', async () => {
    const { nodes } = await smallMesh(3)
    const [asker, a, b] = nodes
    await announce(a, 'allocator')
    await announce(b, 'allocator')
    await untilFound(asker, 'allocator', [a, b])

    const directory = new ProviderDirectory(asker.libp2p, {
      kind: 'allocator',
      refreshMs: 60_000,
      negativeCacheMs: 1_000,
      lookupTimeoutMs: 5_000,
      log,
    })
    try {
      assert.equal(directory.searched, false)
      assert.deepEqual(directory.known(), [], 'known() does not wait for the first lookup')
      const listed = await directory.list(AbortSignal.timeout(10_000))
      assert.equal(directory.searched, true)
      assert.deepEqual(
        listed.map((p) => p.toString()).toSorted(),
        [a.peerId.toString(), b.peerId.toString()].toSorted(),
      )
      // Within refreshMs the list is served from the cache, the same array.
      assert.equal(directory.known(), listed)
    } finally {
      await directory.stop()
    }

    const limited = new ProviderDirectory(asker.libp2p, {
      kind: 'allocator',
      refreshMs: 0,
      negativeCacheMs: 0,
      lookupTimeoutMs: 5_000,
      limit: 1,
    })
    try {
      assert.equal((await limited.list(AbortSignal.timeout(10_000))).length, 1)
    } finally {
      await limited.stop()
    }
  })

  it('keeps the last list when a later lookup finds nothing (a DHT hiccup)', async () => {
    const { nodes } = await smallMesh(2)
    const [asker, a] = nodes
    await announce(a, 'allocator')
    await untilFound(asker, 'allocator', [a])
    const directory = new ProviderDirectory(asker.libp2p, {
      kind: 'allocator',
      refreshMs: 0,
      negativeCacheMs: 0,
      lookupTimeoutMs: 3_000,
    })
    const routing = asker.libp2p.contentRouting
    const real = routing.findProviders.bind(routing)
    let lookups = 0
    try {
      const first = await directory.list(AbortSignal.timeout(10_000))
      assert.equal(first.length, 1)
      // From now on the DHT answers nothing.
      routing.findProviders = () => ({
        async *[Symbol.asyncIterator]() {
          lookups++
          yield* []
        },
      })
      directory.known() // refreshMs 0: a lookup in the background
      await waitFor('a lookup that finds nothing', () => lookups > 0)
      await new Promise((r) => setTimeout(r, 100))
      assert.deepEqual(
        directory.known().map((p) => p.toString()),
        [a.peerId.toString()],
      )
    } finally {
      routing.findProviders = real
      await directory.stop()
    }
  })
})

describe('probeStatusAndRtt', () => {
  it('asks the status, then measures the RTT', async () => {
    const { nodes } = await smallMesh(2)
    const [asker, instance] = nodes
    await instance.libp2p.handle(STATUS_PROTOCOL, (stream) =>
      answerStatus(stream, { service: 'hello', idleSeconds: 0, ready: true }),
    )
    await asker.libp2p.dial(multiaddr(instance.multiaddrs()[0]))
    // A loaded machine may miss the status timeout once: what is asserted is the answer.
    const probe = await waitFor(
      'a probe answered',
      () =>
        probeStatusAndRtt(asker.libp2p, instance.peerId, queryStatus, {
          signal: AbortSignal.timeout(10_000),
          samples: 3,
        }),
      SLOW,
    )
    assert.equal(probe.status.service, 'hello')
    assert.equal(probe.status.ready, true)
    assert.ok(probe.rttMs > 0 && probe.rttMs < 5_000, `rtt ${probe.rttMs} ms`)
  })

  it('fails with the signal when the status never comes, without measuring an RTT', async () => {
    const { nodes } = await smallMesh(2)
    const [asker, instance] = nodes
    await asker.libp2p.dial(multiaddr(instance.multiaddrs()[0]))
    let pinged = false
    const hangs = (): Promise<never> => new Promise(() => {})
    const started = performance.now()
    await assert.rejects(
      probeStatusAndRtt(asker.libp2p, instance.peerId, hangs, {
        signal: AbortSignal.timeout(300),
      }).then((p) => {
        pinged = true
        return p
      }),
    )
    assert.equal(pinged, false)
    assert.ok(performance.now() - started < 15_000, 'the probe outlived its signal')
    // A peer that does not serve the status protocol is refused, not waited for.
    await assert.rejects(
      probeStatusAndRtt(asker.libp2p, instance.peerId, queryStatus, {
        signal: AbortSignal.timeout(10_000),
      }),
    )
  })
})

describe('Announcer schedule', () => {
  /**
   * A libp2p whose DHT has a server and places every record at once, counting them, and
   * whose peer:connect events the test fires: the schedule alone is under test (mesh.spec
   * announces through a real DHT).
   */
  function fakeDht(): { libp2p: Libp2p; placed: number[]; connect(): void } {
    const events = new EventTarget()
    const started = performance.now()
    const fake = {
      placed: [] as number[],
      connect: () => events.dispatchEvent(new CustomEvent('peer:connect')),
      libp2p: {
        services: { dht: { routingTable: { size: 1 } } },
        contentRouting: {
          provide: async () => {
            fake.placed.push(performance.now() - started)
          },
        },
        addEventListener: events.addEventListener.bind(events),
        removeEventListener: events.removeEventListener.bind(events),
      } as unknown as Libp2p,
    }
    return fake
  }

  it('re-announces a new key after firstIntervalMs, doubling up to intervalMs', async () => {
    const dht = fakeDht()
    const announcer = new Announcer(dht.libp2p, log, {
      intervalMs: 600_000,
      firstIntervalMs: 100,
      wakeOnConnect: false,
    })
    announcer.add('service', 'ramp')
    announcer.start()
    try {
      // Rounds at 0, 0.1, 0.3, 0.7 s...: without the ramp, the next would be in 10 min.
      await waitFor('four rounds', () => dht.placed.length >= 4, SLOW)
    } finally {
      await announcer.stop()
    }
    const gaps = dht.placed.slice(1, 4).map((t, i) => t - dht.placed[i])
    // Timers never fire early; a loaded machine may fire them late, so only the floor.
    assert.ok(gaps[0] >= 95, `first gap ${gaps[0]} ms`)
    assert.ok(gaps[1] >= 195, `second gap ${gaps[1]} ms`)
    assert.ok(gaps[2] >= 395, `third gap ${gaps[2]} ms`)
    const after = dht.placed.length
    await new Promise((r) => setTimeout(r, 300))
    assert.equal(dht.placed.length, after, 'a stopped announcer placed a record')
  })

  it('starts a round when a peer connects, unless wakeOnConnect is false', async () => {
    for (const wakeOnConnect of [false, true]) {
      const dht = fakeDht()
      const announcer = new Announcer(dht.libp2p, log, { intervalMs: 600_000, wakeOnConnect })
      announcer.add('service', 'connect')
      announcer.start()
      try {
        await waitFor('the first round', () => dht.placed.length >= 1, SLOW)
        await new Promise((r) => setTimeout(r, 2_100)) // past ANNOUNCE_MIN_GAP_MS
        dht.connect()
        if (wakeOnConnect) {
          await waitFor('a round after the connect', () => dht.placed.length === 2, SLOW)
        } else {
          await new Promise((r) => setTimeout(r, 500))
          assert.equal(dht.placed.length, 1, 'a connecting peer started a round')
        }
      } finally {
        await announcer.stop()
      }
    }
  })
})

describe('PeerLocator', () => {
  it('finds a provider that answers, skips stale records, keeps it until dropped', async () => {
    const { nodes } = await smallMesh(3)
    const [asker, gone, live] = nodes
    await announce(gone, 'hash-lookup')
    await announce(live, 'hash-lookup')
    await untilFound(asker, 'hash-lookup', [gone, live])
    await gone.stop() // its provider record stays in the DHT

    const ends: Array<PeerId | undefined> = []
    const locator = new PeerLocator(asker.libp2p, {
      kind: 'hash-lookup',
      lookupTimeoutMs: 15_000,
      onLookupEnd: (peer) => ends.push(peer),
    })
    try {
      assert.equal(locator.current, undefined)
      assert.equal(locator.searched, false)
      // Two callers at once share one search.
      const [one, two] = await Promise.all([locator.locate(), locator.locate()])
      assert.equal(one?.toString(), live.peerId.toString())
      assert.equal(two, one)
      assert.equal(ends.length, 1)
      assert.equal(locator.searched, true)
      // Cached: no new search.
      assert.equal(await locator.locate(), one)
      assert.equal((await locator.peerId())?.toString(), live.peerId.toString())
      assert.equal(ends.length, 1)
      // Dropped: the next locate() searches again.
      locator.drop(one as PeerId)
      assert.equal(locator.current, undefined)
      assert.equal((await locator.locate())?.toString(), live.peerId.toString())
      assert.equal(ends.length, 2)
    } finally {
      await locator.stop()
    }
  })

  it('after a search that found none asks the DHT once per search, until one is found', async () => {
    const { nodes } = await smallMesh(2)
    const [asker, hl] = nodes
    let lookups = 0
    const routing = asker.libp2p.contentRouting
    const findProviders = routing.findProviders.bind(routing)
    routing.findProviders = (...args) => {
      lookups++
      return findProviders(...args)
    }
    const locator = new PeerLocator(asker.libp2p, { kind: 'hash-lookup', lookupTimeoutMs: 1_500 })
    try {
      assert.equal(await locator.locate(), undefined)
      assert.ok(lookups >= 3, `the first search asked ${lookups} times in 1.5 s`)
      for (let i = 0; i < 2; i++) {
        const before = lookups
        assert.equal(await locator.locate(), undefined)
        assert.equal(lookups - before, 1, 'a search after a miss asked more than once')
      }
      await announce(hl, 'hash-lookup')
      const before = lookups
      assert.equal((await locator.locate())?.toString(), hl.peerId.toString())
      assert.equal(lookups - before, 1)
      // Found, then dropped: the next search is a full one again.
      locator.drop(locator.current as PeerId)
      await hl.stop() // its provider record stays in the DHT, its dials fail
      await waitFor(
        'the asker sees it gone',
        () => asker.libp2p.getConnections(hl.peerId).length === 0,
        SLOW,
      )
      const again = lookups
      assert.equal(await locator.locate(), undefined)
      assert.ok(lookups - again >= 3, `the search after a drop asked ${lookups - again} times`)
    } finally {
      await locator.stop()
    }
  })

  it('uses a fixed address as given, never searching, never dropping it', async () => {
    const { nodes } = await smallMesh(2)
    const [asker, hl] = nodes
    const fixed = hl.multiaddrs()[0]
    let searches = 0
    const locator = new PeerLocator(asker.libp2p, {
      kind: 'hash-lookup',
      fixed: multiaddr(fixed),
      lookupTimeoutMs: 1_000,
      onLookupEnd: () => searches++,
    })
    try {
      const target = await locator.locate()
      assert.equal(String(target), fixed)
      locator.drop(target as never)
      assert.equal(String(locator.current), fixed)
      assert.equal(
        (await locator.peerId(AbortSignal.timeout(5_000)))?.toString(),
        hl.peerId.toString(),
      )
      assert.equal(searches, 0)
    } finally {
      await locator.stop()
    }
  })

  it('starts no search while mayLook says no, and finds none when none answers', async () => {
    const { nodes } = await smallMesh(1)
    const [asker] = nodes
    let may = false
    const ends: Array<PeerId | undefined> = []
    const locator = new PeerLocator(asker.libp2p, {
      kind: 'hash-lookup',
      lookupTimeoutMs: 500,
      mayLook: () => may,
      onLookupEnd: (peer) => ends.push(peer),
    })
    try {
      assert.equal(await locator.locate(), undefined)
      assert.equal(ends.length, 0, 'a search started although mayLook said no')
      may = true
      assert.equal(await locator.locate(), undefined)
      assert.deepEqual(ends, [undefined])
      assert.equal(locator.searched, true)
    } finally {
      await locator.stop()
    }
    assert.equal(
      await findReachableProvider(asker.libp2p, 'hash-lookup', '', AbortSignal.timeout(300)),
      undefined,
    )
  })
})
