import assert from 'node:assert/strict'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { formatSwarmKey, generatePsk, MeshNode, RemoteError } from '@mtc/p2pnode'
import {
  freePort,
  type LaunchedDaemon,
  LocalMesh,
  metricValue,
  REPO_ROOT,
  removeContainers,
  runToEnd,
  stopAll,
  waitFor,
} from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { requestAllocation } from '../src/client.ts'
import { LABEL_MANAGED_BY } from '../src/constants.ts'

/**
 * Issue 12 item 15 with the real daemons of the quickstart (Docker, hl-service on its
 * own etcd, an allocator and a client proxy, both finding hl-service through the DHT):
 * a registration or a deletion takes effect for the next request, in the proxy and in
 * the allocator's own registry cache.
 */
const psk = generatePsk()
let mesh: LocalMesh
let hl: { addr: string; metrics: string }
let alloc: LaunchedDaemon
let node: MeshNode
let gateway: number
let helloTar: string

async function cli(args: string[]): Promise<void> {
  const r = await mesh.hlCli(args)
  assert.equal(r.code, 0, r.stderr)
}

/** An allocation asked of the allocator directly: the instance, or the error code. */
async function allocate(service: string): Promise<string> {
  const conn = await node.libp2p.dial(multiaddr(alloc.addr))
  try {
    const instance = await requestAllocation(node.libp2p, conn.remotePeer, service, {
      timeoutMs: 60_000,
    })
    return instance.started ? 'started' : 'reused'
  } catch (err) {
    if (err instanceof RemoteError) return err.code
    throw err
  }
}

/** hl-service's `get` requests served so far. */
async function registryReads(): Promise<number> {
  const text = await (await fetch(`${hl.metrics}/metrics`)).text()
  let sum = 0
  for (const line of text.split('\n')) {
    if (line.startsWith('mtc_hl_requests_total{') && line.includes('op="get"')) {
      sum += Number(line.split(' ').at(-1))
    }
  }
  return sum
}

async function get(service: string): Promise<{ status: number; code: string | null }> {
  const res = await fetch(`http://127.0.0.1:${gateway}/${service}/`, {
    signal: AbortSignal.timeout(90_000),
  })
  await res.text()
  return { status: res.status, code: res.headers.get('x-mtc-error') }
}

before(async () => {
  mesh = await LocalMesh.create({ swarmKey: formatSwarmKey(psk), prefix: 'mtc-registry-changes-' })
  // The images and their tarballs, while the daemons start (none runs an instance yet).
  const building = runToEnd(
    'bash',
    [join(REPO_ROOT, 'scripts/build-images.sh'), '--save', mesh.dir],
    { timeoutMs: 300_000 },
  )
  const daemons = (async () => {
    await mesh.startBootstrap()
    const h = await mesh.startHlService()
    hl = { addr: h.addr, metrics: `http://${h.plan.metrics}` }
    // Below the ephemeral port range (32768+), away from allocator.spec's ranges.
    const portBase = 30_000 + Math.floor(Math.random() * 20) * 100
    // The allocator and the client proxy find hl-service in the DHT.
    alloc = await mesh.startAllocator(['--port-range', `${portBase}-${portBase + 99}`], {
      dataDir: join(mesh.dir, 'alloc'),
      hl: false,
    })
    gateway = await freePort()
    await mesh.startProxy([String(gateway)], ['--allocation-timeout', '60s'], { hl: false })
    node = await MeshNode.startClient({ role: 'test', psk })
  })()
  const [build] = await Promise.all([building, daemons])
  assert.equal(build.code, 0, build.stderr)
  helloTar = join(mesh.dir, 'hello-world-server.tar')
  // Both found hl-service and subscribed to its change notices (the quickstart's state a
  // few seconds after start); an hl-service without notices has no such metric.
  await waitFor(
    'the proxy and the allocator subscribed to change notices',
    async () => {
      const text = await (await fetch(`${hl.metrics}/metrics`)).text()
      const watchers = metricValue(text, 'mtc_hl_watchers')
      return text.includes('mtc_hl_etcd_up') && (watchers == null || watchers >= 2)
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  )
})

after(async () => {
  await node?.stop()
  await mesh?.stop()
  await stopAll()
  await removeContainers(LABEL_MANAGED_BY).catch(() => {})
})

describe('registry changes reach the proxy and the allocator at once', () => {
  it('request → 404; hl-cli add; the very next request is served by an instance started for it', async () => {
    const early = await get('hello-world-server')
    assert.deepEqual(early, { status: 404, code: 'ERR_UNKNOWN_SERVICE' })
    await cli(['add', '--file', helloTar, 'mtc/hello-world-server:1.0', 'hello-world-server'])
    const next = await get('hello-world-server')
    assert.deepEqual(next, { status: 200, code: null })
  })

  it("the allocator's cache: an unknown name is read once, and its registration is seen by the next allocation", async () => {
    const reads0 = await registryReads()
    assert.equal(await allocate('hello-late'), 'ERR_UNKNOWN_SERVICE')
    assert.equal(await allocate('hello-late'), 'ERR_UNKNOWN_SERVICE')
    assert.equal(await registryReads(), reads0 + 1, 'the second allocation used the cached answer')
    await cli(['add', '--file', helloTar, 'mtc/hello-world-server:1.0', 'hello-late'])
    assert.equal(await allocate('hello-late'), 'started')
  })

  it("the allocator's cache: a deleted record is not used by the next allocation", async () => {
    // A record whose image no host has: the allocation reads it, then fails on the image.
    await cli(['add', '--image-id', `sha256:${'cd'.repeat(32)}`, 'acme/nowhere:1', 'hello-gone'])
    assert.equal(await allocate('hello-gone'), 'ERR_IMAGE_UNAVAILABLE')
    await cli(['delete', 'hello-gone'])
    assert.equal(await allocate('hello-gone'), 'ERR_UNKNOWN_SERVICE')
  })

  it('`hl-cli delete` makes the next request through the proxy 404', async () => {
    await cli(['delete', 'hello-world-server'])
    assert.deepEqual(await get('hello-world-server'), { status: 404, code: 'ERR_UNKNOWN_SERVICE' })
  })
})
