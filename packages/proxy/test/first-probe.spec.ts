import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { loadOrCreateKey } from '@mtc/p2pnode'
import { freePort } from '@mtc/testkit'
import { type InstanceBehindRelay, startBehindRelay } from './behind-relay.ts'
import { FakeAllocator } from './fake-allocator.ts'
import { http, Mesh, type ProxyProc } from './fixture.ts'

/**
 * A new instance's first probes (1 s, 1 s, then the full 5 s): an instance an allocator
 * hands out whose first connection takes longer than 1 s (a loaded host, a far link) is
 * still reached. Before, every first probe was cut at 1 s — the connection being made was
 * dropped with it, and made again from the start by the next one — so such an instance was
 * never usable, and the request waiting for it failed. Here the instance is reachable only
 * through a relay adding SLOW_MS to every round trip: its first connection and status
 * (~6 round trips) take well over 1 s, and well under 5 s.
 */
const SERVICE = 'slow-first'
const SLOW_MS = 300

const mesh = new Mesh()
let instance: InstanceBehindRelay & { peerId: string }
const allocator = new FakeAllocator(mesh, 'alloc', () => ({
  kind: 'reply',
  instance: {
    service: SERVICE,
    peerId: instance.peerId,
    addrs: [instance.relay.multiaddr(instance.peerId)],
    started: true,
  },
}))
let client: ProxyProc

before(async () => {
  await mesh.start()
  const tag = 'slow-first-instance'
  const keyFile = join(mesh.dir.path, `${tag}.key`)
  const peerId = peerIdFromPrivateKey(await loadOrCreateKey(keyFile)).toString()
  instance = {
    ...(await startBehindRelay(mesh, { service: SERVICE, tag, keyFile, delayMs: SLOW_MS })),
    peerId,
  }
  await allocator.start()
  client = await mesh.proxy([String(await freePort())], ['--allocation-timeout', '30s'])
})

after(async () => {
  instance?.relay.kill()
  await allocator.stop()
  await mesh.stop()
})

describe('proxy: the first probes of an allocated instance', () => {
  it('reaches an instance whose first connection takes over a second', async () => {
    const t0 = performance.now()
    const res = await http(client.port, `/${SERVICE}/`, { timeoutMs: 40_000 })
    const ms = performance.now() - t0
    const log = client.proc.stderr()
    assert.equal(res.status, 200, `${res.status} ${res.body.toString()}\n${log}`)
    assert.equal(res.headers['x-instance'], 'slow-first-instance')
    // The instance was never given up: handed out once, kept while it was being reached.
    assert.equal(allocator.count(SERVICE), 1, log)
    assert.doesNotMatch(log, /forgot instance/)
    console.log(`first request through a ${SLOW_MS} ms link answered after ${ms.toFixed(0)} ms`)
  })
})
