import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import type { Logger } from '@libp2p/interface'
import { BlobStore } from '@mtc/blobs'
import { Announcer, generatePsk, MeshNode, openRpc, RpcStream } from '@mtc/p2pnode'
import { tempDir, waitFor } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import type { Etcd3 } from 'etcd3'
import { Registry } from 'prom-client'
import { HashLookupClient } from '../src/client.ts'
import { MAX_WATCH_STREAMS_PER_CONNECTION } from '../src/constants.ts'
import { createEtcdClient } from '../src/daemon/etcd-client.ts'
import { RecordStore } from '../src/daemon/etcd-store.ts'
import { EtcdSupervisor } from '../src/daemon/etcd-supervisor.ts'
import { HashLookupMetrics } from '../src/daemon/metrics.ts'
import { HashLookupServer } from '../src/daemon/server.ts'
import { HL_WATCH } from '../src/protocol.ts'
import { RecordCache } from '../src/record-cache.ts'
import { type EtcdFixture, eventually, startEtcd } from './fixtures/etcd.ts'

/**
 * RecordCache against a real hl-service (HashLookupServer on a real etcd, in process) over
 * a real PSK overlay: change notices make answers exact, reads are shared and bounded.
 */
const IMAGE_ID = `sha256:${'a'.repeat(64)}`
const psk = generatePsk()
const log = Object.assign(() => {}, {
  error: () => {},
  trace: () => {},
  enabled: false,
}) as unknown as Logger

let etcd: EtcdFixture
let etcdClient: Etcd3
let dir: { path: string; remove: () => Promise<void> }
let serverNode: MeshNode
let clientNode: MeshNode
let server: HashLookupServer
let metrics: HashLookupMetrics
let writer: HashLookupClient
let hlAddr: ReturnType<typeof multiaddr>
const caches: RecordCache[] = []

/** Registry reads (hl `get` requests) served so far. */
async function reads(): Promise<number> {
  const values = (await metrics.requests.get()).values
  return values.filter((v) => v.labels.op === 'get').reduce((sum, v) => sum + v.value, 0)
}

function newCache(init: ConstructorParameters<typeof RecordCache>[1] = {}): RecordCache {
  const cache = new RecordCache(clientNode.libp2p, { hl: hlAddr, log, ...init })
  caches.push(cache)
  return cache
}

/** A cache subscribed to change notices; the previous ones stop (one per process, as in
 * the daemons: hl-service takes few subscriptions per connection). */
async function started(init: ConstructorParameters<typeof RecordCache>[1] = {}) {
  await Promise.all(caches.splice(0).map((c) => c.stop()))
  const cache = newCache(init)
  cache.start()
  await waitFor('change notices', () => cache.live, { timeoutMs: 10_000 })
  return cache
}

async function register(name: string): Promise<void> {
  await writer.put({ record: { name, image: `acme/${name}:1`, imageId: IMAGE_ID } })
}

before(async () => {
  etcd = await startEtcd()
  etcdClient = createEtcdClient(etcd.supervisor.endpoints)
  dir = await tempDir('mtc-record-cache-')
  serverNode = await MeshNode.create({
    role: 'hl-service',
    version: '0',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstraps: [],
    psk,
  })
  await serverNode.start()
  metrics = new HashLookupMetrics(new Registry())
  const blobs = new BlobStore({ dataDir: dir.path })
  await blobs.start()
  server = new HashLookupServer({
    libp2p: serverNode.libp2p,
    records: new RecordStore({ etcd: etcdClient }),
    blobs,
    announcer: new Announcer(serverNode.libp2p, log),
    metrics,
    log,
  })
  await server.start()
  hlAddr = multiaddr(serverNode.multiaddrs()[0])
  clientNode = await MeshNode.startClient({ role: 'test', psk })
  writer = new HashLookupClient(clientNode.libp2p, hlAddr)
})

after(async () => {
  await Promise.allSettled(caches.map((c) => c.stop()))
  await server?.stop()
  await clientNode?.stop()
  await serverNode?.stop()
  etcdClient?.close()
  await etcd?.cleanup()
  await dir?.remove()
})

describe('RecordCache with change notices', () => {
  it('a registration and a deletion take effect for the very next read; answers are read once', async () => {
    const cache = await started()
    const before = await reads()
    assert.equal(await cache.get('svc-a'), null)
    assert.equal(await cache.get('svc-a'), null)
    assert.equal(await reads(), before + 1, 'an unknown name is read once')

    await register('svc-a')
    const record = await cache.get('svc-a')
    assert.equal(record?.name, 'svc-a', 'registered: the next read sees it')
    assert.equal((await cache.get('svc-a'))?.name, 'svc-a')
    assert.equal(await reads(), before + 2, 'a record is read once after its change')

    await writer.delete('svc-a')
    assert.equal(await cache.get('svc-a'), null, 'deleted: the next read sees it')
    await register('svc-a')
    assert.equal((await cache.get('svc-a'))?.name, 'svc-a', 'registered again')
  })

  it('concurrent reads of one name are one read', async () => {
    const cache = await started()
    const before = await reads()
    const answers = await Promise.all(Array.from({ length: 50 }, () => cache.get('crowd')))
    assert.deepEqual(answers, Array(50).fill(null))
    assert.equal(await reads(), before + 1)
  })

  it('holds at most maxEntries answers, whatever names are asked', async () => {
    const cache = await started({ maxEntries: 50 })
    for (let i = 0; i < 10; i++) {
      await Promise.all(Array.from({ length: 50 }, (_, j) => cache.get(`made-up-${i}-${j}`)))
    }
    assert.ok(cache.size <= 50, `${cache.size} answers held`)
  })

  it('a write by another hl-service on the same etcd is notified through the etcd watch', async () => {
    const cache = await started()
    assert.equal(await cache.get('elsewhere'), null)
    // Straight into etcd, as a second hl-service sharing the cluster would write it.
    await new RecordStore({ etcd: etcdClient }).put({
      name: 'elsewhere',
      image: 'acme/elsewhere:1',
      imageId: IMAGE_ID,
    })
    await waitFor('the notice', () => cache.peek('elsewhere') === undefined, {
      timeoutMs: 10_000,
      intervalMs: 20,
    })
    assert.equal((await cache.get('elsewhere'))?.name, 'elsewhere')
  })
})

describe('RecordCache without change notices', () => {
  it('trusts "no such service" for the negative TTL only', async () => {
    // Never started: no notice stream.
    const cache = newCache({ negativeTtlMs: 500 })
    assert.equal(await cache.get('ttl-svc'), null)
    await register('ttl-svc')
    assert.equal(cache.live, false)
    await waitFor(
      'the negative answer to expire',
      async () => (await cache.get('ttl-svc')) != null,
      {
        timeoutMs: 5_000,
        intervalMs: 50,
      },
    )
  })
})

describe('the change-notice protocol against misbehaving subscribers', () => {
  it('cuts a subscriber that sends anything after its request, and keeps notifying the others', async () => {
    const cache = await started()
    const rpc = await openRpc(clientNode.libp2p, hlAddr, HL_WATCH)
    await rpc.writeJson({})
    assert.deepEqual(await rpc.readJson(), { ok: true })
    const closed = new Promise((resolve) => rpc.stream.addEventListener('close', resolve))
    await rpc.writeJson({ junk: 'x'.repeat(1000) })
    await closed
    assert.equal(await cache.get('after-junk'), null)
    await register('after-junk')
    assert.equal((await cache.get('after-junk'))?.name, 'after-junk')
  })

  it('answers a malformed request with ERR_PROTOCOL', async () => {
    await Promise.all(caches.splice(0).map((c) => c.stop()))
    const stream = await clientNode.libp2p.dialProtocol(hlAddr, HL_WATCH)
    stream.send(Uint8Array.from([3, 0x7b, 0x7b, 0x7b])) // "{{{"
    const reply = await new RpcStream(stream).readJson<{ ok: boolean; code: string }>()
    assert.equal(reply.ok, false)
    assert.equal(reply.code, 'ERR_PROTOCOL')
  })

  it(`refuses more than ${MAX_WATCH_STREAMS_PER_CONNECTION} subscriptions per connection`, async () => {
    const node = await MeshNode.startClient({ role: 'test', psk })
    try {
      const open: RpcStream[] = []
      let refused = 0
      for (let i = 0; i < MAX_WATCH_STREAMS_PER_CONNECTION + 3; i++) {
        try {
          const rpc = await openRpc(node.libp2p, hlAddr, HL_WATCH)
          await rpc.writeJson({})
          await rpc.readJson()
          open.push(rpc)
        } catch {
          refused++
        }
      }
      assert.equal(open.length, MAX_WATCH_STREAMS_PER_CONNECTION)
      assert.equal(refused, 3)
    } finally {
      await node.stop()
    }
  })
})

// Last: it restarts the shared etcd.
describe('change notices across an etcd restart', () => {
  it('hl-service tells its subscribers to forget what they cached, and notifies later writes again', async () => {
    const cache = await started()
    assert.equal(await cache.get('after-restart'), null)
    await etcd.supervisor.stop()
    etcd.supervisor = new EtcdSupervisor(etcd.init)
    await etcd.supervisor.start()
    // Changes made while its watch was cut could be lost: a reset.
    await waitFor('the reset', () => cache.peek('after-restart') === undefined, {
      timeoutMs: 20_000,
      intervalMs: 50,
    })
    assert.equal(await eventually(() => cache.get('after-restart'), 10_000), null)
    // The watch is back: a write by another hl-service is notified.
    await eventually(
      () =>
        new RecordStore({ etcd: etcdClient }).put({
          name: 'after-restart',
          image: 'acme/after-restart:1',
          imageId: IMAGE_ID,
        }),
      10_000,
    )
    await waitFor('the notice', () => cache.peek('after-restart') === undefined, {
      timeoutMs: 10_000,
      intervalMs: 20,
    })
    assert.equal((await cache.get('after-restart'))?.name, 'after-restart')
  })
})

describe('a registry that comes back', () => {
  it('is read again as soon as its change notices resume, without waiting out the retry period', async () => {
    const cache = await started({ retryMs: 60_000 })
    await server.stop() // the process is gone: reads fail, notices stop
    await assert.rejects(cache.get('comeback'))
    await waitFor('notices lost', () => !cache.live, { timeoutMs: 10_000, intervalMs: 20 })
    await server.start() // the same hl-service back
    await waitFor('notices again', () => cache.live, { timeoutMs: 20_000, intervalMs: 50 })
    await register('comeback')
    // Well inside the 60 s retry period: the registry is read, not skipped as down.
    assert.equal((await cache.get('comeback'))?.name, 'comeback')
  })
})
