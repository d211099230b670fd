import assert from 'node:assert/strict'
import { request } from 'node:http'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { formatSwarmKey, generatePsk, MeshNode, type RemoteError } from '@mtc/p2pnode'
import {
  docker,
  ensureImages,
  freePort,
  LocalMesh,
  type Proc,
  removeContainers,
  stopAll,
  waitFor,
} from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { allocatorStatus, requestAllocation } from '../src/client.ts'
import { LABEL_SERVICE } from '../src/constants.ts'

/**
 * What happens to instances when something dies, on real Docker: the only instance is
 * killed while requests flow (issue 12 item 7), and an allocator restarts with a new
 * identity (item 8).
 */
const SERVICE = 'lifecycle-hello'
/** Requests sent 20 ms apart (issue 12's measurement), 5 s worth. */
const GAP_MS = 20
const REQUESTS = 250
/** The kill comes after this many requests were sent (0.5 s of healthy traffic). */
const KILL_AFTER = 25
/**
 * Longest any request of the flow may take: "a few seconds". The outage cannot be shorter
 * than the start of a new instance, which on 2 cores shared with other suites took up to
 * 4.4 s (load average 26): the bound is this, or 4 cold starts measured in the same run.
 * Before the fix requests waited out the 60 s --allocation-timeout.
 */
const MAX_DELAY_MS = 10_000
const MAX_DELAY_COLD_STARTS = 4

const psk = generatePsk()
let mesh: LocalMesh
let node: MeshNode
// Below the ephemeral port range, away from allocator.spec.ts's 21000-28999.
const portBase = 29000 + Math.floor(Math.random() * 9) * 100

interface Alloc {
  proc: Proc
  addr: string
  peerId: string
}

/** An allocator on `dataDir`; a fresh identity at each start unless `keyFile` is given. */
async function startAllocator(dataDir: string, keyFile?: string, extra: string[] = []) {
  const args = ['--port-range', `${portBase}-${portBase + 99}`]
  if (keyFile != null) args.push('--key-file', keyFile)
  const d = await mesh.startAllocator([...args, ...extra], { dataDir })
  return { proc: d.proc as Proc, addr: d.addr, peerId: d.peerId }
}

/** Running containers of SERVICE on this Docker daemon. */
async function running(): Promise<Array<{ id: string; labels: Record<string, string> }>> {
  const ps = await docker(['ps', '-q', '--filter', `label=${LABEL_SERVICE}=${SERVICE}`])
  const ids = ps.stdout.split('\n').filter((l) => l !== '')
  if (ids.length === 0) return []
  const inspect = JSON.parse((await docker(['inspect', ...ids])).stdout) as Array<{
    Id: string
    Config: { Labels: Record<string, string> }
  }>
  return inspect.map((c) => ({ id: c.Id, labels: c.Config.Labels }))
}

async function allocate(a: Alloc, service: string) {
  const conn = await node.libp2p.dial(multiaddr(a.addr))
  return await requestAllocation(node.libp2p, conn.remotePeer, service, { timeoutMs: 60_000 })
}

async function status(a: Alloc) {
  const conn = await node.libp2p.dial(multiaddr(a.addr))
  return await allocatorStatus(node.libp2p, conn.remotePeer, {
    signal: AbortSignal.timeout(10_000),
  })
}

/** One GET through the gateway: status (0 when the connection failed) and duration. */
function get(port: number, path: string): Promise<{ status: number; ms: number; code: string }> {
  const t0 = performance.now()
  return new Promise((resolve) => {
    const done = (status: number, code: string) =>
      resolve({ status, ms: performance.now() - t0, code })
    const req = request(
      { host: '127.0.0.1', port, path, agent: false, signal: AbortSignal.timeout(90_000) },
      (res) => {
        res.resume()
        res.on('end', () => done(res.statusCode ?? 0, String(res.headers['x-mtc-error'] ?? '')))
        res.on('error', (err) => done(0, err.message))
      },
    )
    req.on('error', (err) => done(0, err.message))
    req.end()
  })
}

before(async () => {
  mesh = await LocalMesh.create({ swarmKey: formatSwarmKey(psk), prefix: 'mtc-lifecycle-' })
  await ensureImages()
  const imageId = (
    await docker(['image', 'inspect', '-f', '{{.Id}}', 'mtc/hello-world-server:1.0'])
  ).stdout.trim()
  await mesh.startBootstrap()
  await mesh.startHlService()
  for (const name of [SERVICE, `${SERVICE}-2`]) {
    const add = await mesh.hlCli([
      'add',
      '--image-id',
      imageId,
      // One instance at most: the GETs that queue while the killed one is replaced reach
      // the new one at once, which load-aware scaling would answer with a second instance.
      '--max-instances',
      '1',
      'mtc/hello-world-server:1.0',
      name,
    ])
    assert.equal(add.code, 0, add.stderr)
  }
  node = await MeshNode.startClient({ role: 'test', psk })
})

after(async () => {
  await node?.stop()
  await mesh?.stop()
  await stopAll()
  await removeContainers(`${LABEL_SERVICE}=${SERVICE}`).catch(() => {})
  await removeContainers(`${LABEL_SERVICE}=${SERVICE}-2`).catch(() => {})
})

describe('instance lifecycle on real Docker', () => {
  const dataDir = () => join(mesh.dir, 'alloc-data')
  let first: Alloc

  it('a killed instance is replaced at once: no GET fails, none waits more than a few seconds', async (t) => {
    first = await startAllocator(dataDir(), join(mesh.dir, 'alloc-1.key'))
    const port = await freePort()
    const proxy = await mesh.startProxy([String(port)], [], { hl: false })
    t.after(() => proxy.stop())
    // The first answer comes from an instance started for it: the harness's cold start.
    const cold = await waitFor(
      'a first answer (cold start)',
      async () => {
        const r = await get(port, `/${SERVICE}/`)
        return r.status === 200 ? r.ms : undefined
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    )
    const bound = Math.max(MAX_DELAY_MS, MAX_DELAY_COLD_STARTS * cold)
    const [victim] = await running()
    assert.ok(victim != null, 'an instance runs')

    const t0 = performance.now()
    const results: Array<Promise<{ status: number; ms: number; code: string; at: number }>> = []
    let killedAt = 0
    for (let i = 0; i < REQUESTS; i++) {
      const at = performance.now() - t0
      results.push(get(port, `/${SERVICE}/`).then((r) => ({ ...r, at })))
      if (i === KILL_AFTER) {
        killedAt = performance.now() - t0
        await docker(['kill', victim.id])
      }
      // Paced on the clock, not on the previous answer: requests keep coming during the outage.
      const next = t0 + (i + 1) * GAP_MS
      await sleep(Math.max(0, next - performance.now()))
    }
    const answers = await Promise.all(results)
    const failed = answers.filter((a) => a.status !== 200)
    const maxMs = Math.max(...answers.map((a) => a.ms))
    const afterKill = answers.filter((a) => a.at >= killedAt)
    const slow = afterKill.filter((a) => a.ms > 1_000).length
    const codes = [...new Set(failed.map((a) => `${a.status} ${a.code}`))].join(', ')
    t.diagnostic(
      `${answers.length} GETs ${GAP_MS} ms apart, instance killed after ${killedAt.toFixed(0)} ms: ` +
        `${failed.length} failed (${codes || 'none'}), max delay ${maxMs.toFixed(0)} ms, ` +
        `${slow} took over 1 s (cold start ${cold.toFixed(0)} ms, bound ${bound.toFixed(0)} ms)`,
    )
    assert.equal(failed.length, 0, `failed: ${codes}`)
    assert.ok(maxMs <= bound, `a request waited ${maxMs.toFixed(0)} ms`)
    const now = await running()
    assert.equal(now.length, 1, 'one instance runs again')
    assert.notEqual(now[0].id, victim.id)
    // The dead one is removed (noticed through Docker's events, not left for the user).
    await waitFor(
      'the killed container removed',
      async () => (await docker(['ps', '-aq', '--filter', `id=${victim.id}`])).stdout.trim() === '',
      { timeoutMs: 15_000, intervalMs: 250 },
    )
  })

  it('an allocator restarted with a new identity re-adopts its instance: served, counted, reaped when idle', async (t) => {
    const before = await running()
    assert.equal(before.length, 1)
    const instancePeer = before[0].labels['mtc.peer-id']
    assert.equal(await first.proc.stop(), 0)
    assert.equal((await running()).length, 1, 'instances outlive the allocator')

    // No --key-file: a fresh identity, as the quickstart used to run it.
    const second = await startAllocator(dataDir(), undefined, ['--max-instances', '1'])
    t.after(() => second.proc.stop())
    assert.notEqual(second.peerId, first.peerId)
    // Counted against --max-instances.
    const st = await status(second)
    assert.equal(st.running, 1, `${JSON.stringify(st)}\n${second.proc.stderr()}`)
    await assert.rejects(
      allocate(second, `${SERVICE}-2`),
      (e: RemoteError) => e.code === 'ERR_NO_CAPACITY',
    )
    // Served.
    const served = await allocate(second, SERVICE)
    assert.equal(served.peerId, instancePeer)
    assert.equal(served.started, false)

    // Once more with a fresh identity, now with a short idle timeout: reaped (the
    // instance has been idle since the previous test, so at the first round).
    assert.equal(await second.proc.stop(), 0)
    const third = await startAllocator(dataDir(), undefined, ['--idle-timeout', '1s'])
    t.after(() => third.proc.stop())
    await waitFor('the idle instance reaped', async () => (await running()).length === 0, {
      timeoutMs: 30_000,
      intervalMs: 500,
    })
    assert.match(third.proc.stderr(), /idle for \d+ s; stopping/)
  })
})
