import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext } from 'node:test'
import { promisify } from 'node:util'
import { formatSwarmKey, generatePsk, MeshNode, type RemoteError } from '@mtc/p2pnode'
import {
  freePort,
  httpGet,
  type LaunchedDaemon,
  LocalMesh,
  metricValue,
  type Proc,
  REPO_ROOT,
  removeContainers,
  runToEnd,
  stopAll,
  waitFor,
} from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { requestAllocation } from '../src/client.ts'
import { LABEL_MANAGED_BY, LABEL_SERVICE } from '../src/constants.ts'

const exec = promisify(execFile)
const docker = async (...args: string[]) =>
  (await exec('docker', args, { maxBuffer: 64 << 20 })).stdout.trim()

const psk = generatePsk()
let mesh: LocalMesh
let dir: { path: string }
let hl: { proc: Proc; addr: string; dataDir: string }
let node: MeshNode
let helloTar: string
let helloImageId: string
// Below the ephemeral port range (32768+), where outgoing connections could take a port.
let portBase = 21000 + Math.floor(Math.random() * 80) * 100

interface Alloc {
  proc: Proc
  addr: string
  peerId: string
  metrics: string
  dataDir: string
  /** The launcher's handle: a restart keeps identity and flags. */
  daemon: LaunchedDaemon
}

/** Every allocator this file started: its containers, and only those, are removed at the end. */
const allocators = new Set<Alloc>()
/** A container of someone else's, which this file's clean-up must leave alone. */
const FOREIGN = `${LABEL_MANAGED_BY}=not-this-test-${process.pid}`
let foreignId = ''
/** The image the fetch test builds, removed at the end whatever happens. */
const VARIANT_IMAGE = 'mtc-test/variant:1'

/** Stops an allocator and removes the containers it manages. */
async function stopAllocator(a: Alloc): Promise<void> {
  await a.proc.stop()
  await removeContainers(managedBy(a))
}

/**
 * An allocator for one test, stopped (and its containers removed) when the test ends,
 * also when it fails.
 */
async function extraAllocator(t: TestContext, extra: string[] = []): Promise<Alloc> {
  const x = await startAllocator(extra)
  t.after(() => stopAllocator(x))
  return x
}

let seq = 0
async function startAllocator(extra: string[] = [], reuse?: Alloc): Promise<Alloc> {
  let daemon = reuse?.daemon
  if (daemon != null) {
    await daemon.start()
  } else {
    const n = seq++
    // An instance's boot (container, its proxy joining the mesh) takes its time on a
    // loaded machine; no test here is about the start timeout.
    const args = ['--port-range', `${portBase}-${portBase + 99}`, '--start-timeout', '100s']
    args.push('--key-file', join(dir.path, `alloc-${n}.key`), ...extra)
    daemon = await mesh.startAllocator(args, { dataDir: join(dir.path, `alloc-${n}`) })
    portBase += 100
  }
  const started = {
    proc: daemon.proc as Proc,
    addr: daemon.addr,
    peerId: daemon.peerId,
    metrics: `http://${daemon.plan.metrics}`,
    dataDir: daemon.plan.args[daemon.plan.args.indexOf('--data-dir') + 1],
    daemon,
  }
  allocators.add(started)
  return started
}

/** A client-mode proxy (allocating on demand) on a free port; resolves once it answers. */
async function startClientProxy(extra: string[] = []): Promise<number> {
  const port = await freePort()
  await mesh.startProxy([String(port)], extra, { hl: false })
  return port
}

async function allocate(a: Alloc, service: string) {
  const conn = await node.libp2p.dial(multiaddr(a.addr))
  return await requestAllocation(node.libp2p, conn.remotePeer, service, { timeoutMs: 120_000 })
}

/** The label on every container `a` manages. */
const managedBy = (a: Alloc) => `${LABEL_MANAGED_BY}=${a.peerId}`

async function containers(a: Alloc, service?: string): Promise<string[]> {
  const filters = ['--filter', `label=${managedBy(a)}`]
  if (service != null) filters.push('--filter', `label=${LABEL_SERVICE}=${service}`)
  const out = await docker('ps', '-q', ...filters)
  return out === '' ? [] : out.split('\n')
}

async function cli(args: string[], timeoutMs?: number) {
  return await mesh.hlCli(args, { timeoutMs })
}

before(async () => {
  mesh = await LocalMesh.create({ swarmKey: formatSwarmKey(psk), prefix: 'mtc-alloc-' })
  dir = { path: mesh.dir }
  // The images and their tarballs, while the daemons that need neither start.
  const building = runToEnd(
    'bash',
    [join(REPO_ROOT, 'scripts/build-images.sh'), '--save', dir.path],
    { timeoutMs: 300_000 },
  )
  const hlData = join(dir.path, 'hl-data')
  const daemons = (async () => {
    await mesh.startBootstrap()
    return await mesh.startHlService([], hlData)
  })()
  const [build, d] = await Promise.all([building, daemons])
  assert.equal(build.code, 0, build.stderr)
  helloTar = join(dir.path, 'hello-world-server.tar')
  helloImageId = await docker('image', 'inspect', '-f', '{{.Id}}', 'mtc/hello-world-server:1.0')
  hl = { proc: d.proc as Proc, addr: d.addr, dataDir: hlData }

  // 135 MB through the overlay: over 30 s when the machine's 2 cores are shared.
  const [add, client] = await Promise.all([
    cli(['add', '--file', helloTar, 'mtc/hello-world-server:1.0', 'hello-world-server'], 180_000),
    MeshNode.startClient({ role: 'test', psk }),
  ])
  node = client
  assert.equal(add.code, 0, add.stderr)
  foreignId = await docker('create', '--label', FOREIGN, 'mtc/hello-world-server:1.0')
})

after(async () => {
  await node?.stop()
  await mesh?.stop()
  await stopAll()
  // Only what this file started: other runs' containers on the same daemon stay.
  for (const a of allocators) await removeContainers(managedBy(a)).catch(() => {})
  await docker('rmi', '-f', VARIANT_IMAGE).catch(() => {})
  if (foreignId === '') return
  const left = await docker('ps', '-aq', '--no-trunc', '--filter', `label=${FOREIGN}`)
  await docker('rm', '-f', foreignId).catch(() => {})
  assert.equal(left, foreignId, 'the clean-up removed a container it did not start')
})

describe('allocator', () => {
  let a: Alloc

  it('starts an instance that answers through the overlay, without the PSK in its environment', async () => {
    a = await startAllocator()
    const t0 = performance.now()
    const instance = await allocate(a, 'hello-world-server')
    const coldMs = performance.now() - t0
    assert.equal(instance.started, true)
    assert.match(instance.peerId, /^12D3Koo/)
    assert.equal((await containers(a, 'hello-world-server')).length, 1)
    assert.ok(coldMs < 30_000)

    // A client proxy reaches it through the overlay.
    const port = await startClientProxy(['--no-allocate'])
    const body = await waitFor(
      'hello through the mesh',
      async () => {
        const r = await httpGet(`http://127.0.0.1:${port}/hello-world-server/`)
        return r.status === 200 ? r.body : undefined
      },
      { timeoutMs: 20_000, intervalMs: 250 },
    )
    assert.match(body, /Hello, world/)

    const [id] = await containers(a, 'hello-world-server')
    const inspect = await docker('inspect', id)
    const pskHex = Buffer.from(psk).toString('hex')
    assert.ok(!inspect.includes(pskHex), 'docker inspect shows the PSK')
    const env = JSON.parse(inspect)[0].Config.Env as string[]
    assert.ok(env.some((e) => e.startsWith('SERVICE_NAME=hello-world-server')))
    assert.ok(!env.some((e) => /PSK/i.test(e) && !e.startsWith('P2P_PSK_FILE=')), env.join(' '))
    const mounts = JSON.parse(inspect)[0].Mounts as Array<{ Destination: string; RW: boolean }>
    assert.ok(mounts.some((m) => m.Destination === '/run/mtc/swarm.key' && m.RW === false))
    // mtc/base's entrypoint refuses to run without it (see packages/images).
    assert.deepEqual(JSON.parse(inspect)[0].HostConfig.SecurityOpt, ['no-new-privileges'])
  })

  it('20 concurrent first requests through a client proxy start one container and all succeed', async () => {
    const add = await cli([
      'add',
      '--image-id',
      helloImageId,
      'mtc/hello-world-server:1.0',
      'burst',
    ])
    assert.equal(add.code, 0, add.stderr)
    const port = await startClientProxy()
    // They wait for a cold start: over 5 s (httpGet's default) on a loaded machine.
    const replies = await Promise.all(
      Array.from({ length: 20 }, () => httpGet(`http://127.0.0.1:${port}/burst/`, 60_000)),
    )
    assert.deepEqual(
      replies.map((r) => r.status),
      Array(20).fill(200),
      replies.map((r) => r.body).join('|'),
    )
    assert.ok(replies.every((r) => /Hello, world/.test(r.body)))
    assert.equal((await containers(a, 'burst')).length, 1)
    // The registry does not know it: 404 with the mtc code, and nothing starts.
    const unknown = await fetch(`http://127.0.0.1:${port}/no-such-service/`)
    assert.equal(unknown.status, 404)
    assert.equal(unknown.headers.get('x-mtc-error'), 'ERR_UNKNOWN_SERVICE')
    assert.equal((await containers(a, 'no-such-service')).length, 0)
  })

  it('shares one start among 20 concurrent requests', async (t) => {
    const b = await extraAllocator(t)
    const replies = await Promise.all(
      Array.from({ length: 20 }, () => allocate(b, 'hello-world-server')),
    )
    assert.equal(new Set(replies.map((r) => r.peerId)).size, 1)
    assert.equal(replies.filter((r) => r.started).length, 1)
    assert.equal((await containers(b, 'hello-world-server')).length, 1)
  })

  it('refuses an unknown service and an invalid name', async () => {
    await assert.rejects(
      allocate(a, 'no-such-service'),
      (e: RemoteError) => e.code === 'ERR_UNKNOWN_SERVICE',
    )
    await assert.rejects(allocate(a, 'Bad_Name'), (e: RemoteError) => e.code === 'ERR_INVALID_NAME')
  })

  it('notices a crashed instance and starts a new one on the next request', async () => {
    const before = await allocate(a, 'hello-world-server')
    const [id] = await containers(a, 'hello-world-server')
    await docker('kill', id)
    await waitFor(
      'crash noticed',
      async () => {
        const again = await allocate(a, 'hello-world-server')
        return again.peerId !== before.peerId ? again : undefined
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    )
    assert.equal((await containers(a, 'hello-world-server')).length, 1)
  })

  it('re-adopts its running instances after a restart', async () => {
    const before = await allocate(a, 'hello-world-server')
    assert.equal(await a.proc.stop(), 0)
    assert.equal(
      (await containers(a, 'hello-world-server')).length,
      1,
      'instances outlive the allocator',
    )
    a = await startAllocator([], a)
    const after = await allocate(a, 'hello-world-server')
    assert.equal(after.peerId, before.peerId)
    assert.equal(after.started, false)
    assert.equal((await containers(a, 'hello-world-server')).length, 1)
  })

  it('answers ERR_NO_CAPACITY at --max-instances', async (t) => {
    const c = await extraAllocator(t, ['--max-instances', '1'])
    await allocate(c, 'hello-world-server')
    const add = await cli([
      'add',
      '--image-id',
      helloImageId,
      'mtc/hello-world-server:1.0',
      'second-service',
    ])
    assert.equal(add.code, 0, add.stderr)
    await assert.rejects(
      allocate(c, 'second-service'),
      (e: RemoteError) => e.code === 'ERR_NO_CAPACITY',
    )
    assert.equal((await containers(c)).length, 1)
  })

  it('the proxy answers 503 ERR_NO_CAPACITY when every allocator is full', async (t) => {
    // The only allocator left in the mesh is one already at its limit: the others and
    // their instances go first (the DHT spans every node of this PSK).
    await stopAllocator(a)
    const full = await extraAllocator(t, ['--max-instances', '1'])
    // The allocator writes its address before it serves allocations.
    await waitFor('the allocator serving allocations', () =>
      allocate(full, 'hello-world-server').then(() => true),
    )
    // A registered service without instances (the proxy refuses names the registry lacks).
    const add = await cli([
      'add',
      '--image-id',
      helloImageId,
      'mtc/hello-world-server:1.0',
      'burst',
    ])
    assert.equal(add.code, 0, add.stderr)
    const port = await startClientProxy()
    const res = await fetch(`http://127.0.0.1:${port}/burst/`)
    assert.equal(res.status, 503, await res.text())
    assert.equal(res.headers.get('x-mtc-error'), 'ERR_NO_CAPACITY')
    assert.ok(Number(res.headers.get('retry-after')) > 0)
    assert.equal((await containers(full)).length, 1)
  })

  it('stops instances idle longer than --idle-timeout', async (t) => {
    const d = await extraAllocator(t, ['--idle-timeout', '2s'])
    await allocate(d, 'hello-world-server')
    assert.equal((await containers(d)).length, 1)
    await waitFor('idle instance reaped', async () => (await containers(d)).length === 0, {
      timeoutMs: 30_000,
      intervalMs: 500,
    })
    const { body } = await httpGet(`${d.metrics}/metrics`)
    assert.equal(metricValue(body, 'mtc_allocator_instances_reaped_total', { reason: 'idle' }), 1)
  })

  it('fetches a missing image over the overlay, verifies it, and refuses a corrupted one', async (t) => {
    t.after(() => docker('rmi', '-f', VARIANT_IMAGE).catch(() => {}))
    // A distinct image (its own ID), registered with its tarball, then removed from Docker.
    const ctx = join(dir.path, 'variant')
    await mkdir(ctx, { recursive: true })
    await writeFile(
      join(ctx, 'Dockerfile'),
      'FROM mtc/hello-world-server:1.0\nLABEL mtc.test.variant=1\n',
    )
    await exec('docker', ['build', '--network=host', '-q', '-t', VARIANT_IMAGE, ctx], {
      env: { ...process.env, DOCKER_BUILDKIT: '0' },
    })
    const variantTar = join(dir.path, 'variant.tar')
    await docker('save', '-o', variantTar, VARIANT_IMAGE)
    assert.equal((await cli(['add', '--file', variantTar, VARIANT_IMAGE, 'variant'])).code, 0)
    await docker('rmi', '-f', VARIANT_IMAGE)

    const e = await extraAllocator(t)
    const instance = await allocate(e, 'variant')
    assert.equal(instance.started, true)
    const { body } = await httpGet(`${e.metrics}/metrics`)
    assert.ok((metricValue(body, 'mtc_allocator_image_cache_bytes') ?? 0) > 0)
    await stopAllocator(e)

    // Now the stored tarball is corrupted on hl-service's disk, and the image is gone again.
    await docker('rmi', '-f', VARIANT_IMAGE)
    const blobDir = join(hl.dataDir, 'blobs', 'sha256')
    const record = JSON.parse((await cli(['--json', 'get', 'variant'])).stdout)
    const blobPath = join(blobDir, record.blob.digest.slice('sha256:'.length))
    const bytes = await readFile(blobPath)
    bytes[bytes.length >> 1] ^= 0xff
    await writeFile(blobPath, bytes)
    const f = await extraAllocator(t)
    await assert.rejects(allocate(f, 'variant'), (err: RemoteError) => {
      assert.equal(err.code, 'ERR_IMAGE_UNAVAILABLE')
      assert.match(err.message, /digest|hashes to/i)
      return true
    })
    assert.equal((await containers(f)).length, 0, 'nothing runs')
    assert.deepEqual(await readdir(join(f.dataDir, 'tmp')), [])
  })
})
