import assert from 'node:assert/strict'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { type HttpAnswer, type Instance, Mesh, type MeshSpec } from '../src/index.ts'
import { fourHosts, missing, summary } from './scenario-helpers.ts'

/**
 * Issue #14, "near and far allocators: under load the extra instances start on the nearest
 * hosts first", on the simulated WAN with real Docker. The issue's four hosts: from the
 * client, near is 5 ms away and far 40 ms. near's allocator holds at most 2 instances
 * (`--max-instances 2`); the service asks for `--concurrency 2 --max-instances 3`. A cold
 * request starts the first instance on near; a steady load of ~12 requests in flight then
 * makes the client proxy scale out: the second instance on near (it has room, far has
 * none yet), the third on far (near is full), never a fourth.
 */
const skip = missing()

const SERVICE = 'hello-nearfar'
/** What near's allocator holds: the third instance must go elsewhere. */
const NEAR_CAPACITY = 2
const MAX_INSTANCES = 3
/**
 * Closed loop: CLIENTS clients, each a 300 ms request after the other (6× the target on one
 * instance), as the issue's scale-out scenario. Closed, not open: on a machine that falls
 * behind, the load waits rather than piling up.
 */
const CLIENTS = 12
const REQUEST_MS = 300
/** Requests per client per round (one keep-alive connection each)... */
const ROUND = 10
/** ...rounds go on until the third instance served SHARE_MS... */
const SHARE_MS = 5_000
/** ...or this long: two container starts under load (3–18 s each on this 2-core machine). */
const LOAD_CAP_MS = 120_000
const SAMPLE_MS = 1_000
const START_TIMEOUT = '90s'

const SPEC: MeshSpec = {
  topology: fourHosts(),
  registry: 'registry',
  allocators: ['near', 'far'],
  clients: ['client'],
  services: [
    {
      // No RTT limits: the choice under test is the allocators' order (5 vs 40 ms).
      name: SERVICE,
      // Both dockerds have the image preloaded: no 130 MB upload at registration.
      upload: false,
      addFlags: ['--concurrency', '2', '--max-instances', String(MAX_INSTANCES)],
    },
  ],
  // As the 30-host scenario (scale/wan30.spec.ts): the simulated hosts share 2 cores with
  // other jobs (load 30–70 here), where a real host has its own; at nice 0 a container
  // start took over 90 s. Not -10: the forwarder (the network) keeps precedence.
  nice: -5,
  // A container start takes 3–5 s on a quiet machine, over 30 s (the allocator's default
  // bound) at a load average of 40: the scenario is about where, not how fast.
  hostArgs: {
    near: {
      allocator: [
        '--max-instances',
        String(NEAR_CAPACITY),
        '--start-timeout',
        START_TIMEOUT,
        '--log-level',
        'info',
      ],
    },
    far: { allocator: ['--start-timeout', START_TIMEOUT, '--log-level', 'info'] },
    // Its scale-out decisions, for the report.
    client: { proxy: ['--allocation-timeout', '120s', '--log-level', 'info'] },
  },
}

/** When each container of the service was created (ms since the epoch), per host. */
async function created(mesh: Mesh, host: string): Promise<Array<Instance & { at: number }>> {
  const list = await mesh.containers(host, { service: SERVICE, all: true })
  if (list.length === 0) return []
  const r = await mesh
    .dockerd(host)
    .docker(['inspect', '-f', '{{.Id}} {{.Created}}', ...list.map((c) => c.id)])
  const at = new Map(
    r.stdout
      .trim()
      .split('\n')
      .map((l) => l.split(' ') as [string, string]),
  )
  return list.map((c) => ({ ...c, at: Date.parse(at.get(c.id) ?? '') }))
}

describe('scenario: near and far allocators under load', { skip, timeout: 420_000 }, () => {
  let mesh: Mesh

  before(async () => {
    mesh = await Mesh.start(SPEC)
    console.log(`mesh up: ${JSON.stringify(mesh.timings)} (ms after start)`)
  })

  after(async () => {
    await mesh?.destroy()
  })

  it('extra instances start on the nearest allocator with room first: near, near, then far', async () => {
    // A cold start: 2–5 s on a quiet machine, a minute when the load average is 30 or more.
    const cold = await mesh.request(`/${SERVICE}/`, { timeoutMs: 120_000 })
    const logs = () =>
      ['client/proxy', 'near/allocator', 'far/allocator']
        .map((d) => {
          const [h, k] = d.split('/') as [string, 'proxy' | 'allocator']
          const proc = mesh.proc(h, k)?.child
          const exit = proc?.exitCode ?? proc?.signalCode ?? 'running'
          return `--- ${d} (${exit})\n${mesh.log(h, k).split('\n').slice(-40).join('\n')}`
        })
        .join('\n')
    assert.equal(cold.status, 200, `${cold.body}${cold.error ?? ''}\n${logs()}`)
    assert.deepEqual(
      (await mesh.instances(SERVICE)).map((i) => i.host),
      ['near'],
      `the cold start goes to near\n${logs()}`,
    )

    const started = Date.now()
    // Rounds of requests until the third instance has served for SHARE_MS, or LOAD_CAP_MS:
    // as short as the starts allow.
    const all: HttpAnswer[] = []
    const usableAt: number[] = []
    const samples: Array<{ at: number; near: number; far: number }> = []
    let atThree: Map<string, number> | undefined
    const loading = () => {
      const elapsed = Date.now() - started
      const third = usableAt[MAX_INSTANCES - 1]
      const client = mesh.proc('client', 'proxy')?.child
      if (client == null || client.exitCode != null || client.signalCode != null) return false
      return elapsed < LOAD_CAP_MS && (third == null || elapsed - third < SHARE_MS)
    }
    const load = Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (loading()) {
          const answers = await mesh.requests(`/${SERVICE}/slow?ms=${REQUEST_MS}&chunks=1`, ROUND, {
            timeoutMs: 60_000,
          })
          all.push(...answers)
        }
      }),
    )
    // Once a second: usable instances as the client proxy sees them, containers per host.
    while (loading()) {
      const usable =
        (await mesh
          .metric('client', 'proxy', 'mtc_proxy_service_instances', { service: SERVICE })
          .catch(() => undefined)) ?? 0
      const at = Date.now() - started
      while (usableAt.length < usable) usableAt.push(at)
      const [near, far] = await Promise.all(
        ['near', 'far'].map((h) => mesh.containers(h, { service: SERVICE }).catch(() => [])),
      )
      samples.push({ at, near: near.length, far: far.length })
      // Request counts once the third serves: the shares judged are those of three instances.
      if (usable >= MAX_INSTANCES && atThree == null) {
        atThree = new Map(
          [...(await mesh.inboundRequests(SERVICE))].map(([id, s]) => [id, s.requests]),
        )
      }
      await sleep(SAMPLE_MS)
    }
    await load
    const failed = all.filter((a) => a.status !== 200)
    const served = await mesh.inboundRequests(SERVICE)

    const [near, far] = await Promise.all(['near', 'far'].map((h) => created(mesh, h)))
    const order = [...near, ...far].sort((a, b) => a.at - b.at)
    const share = (from?: Map<string, number>) => {
      const counts = order.map(
        (c) => (served.get(c.peerId)?.requests ?? 0) - (from?.get(c.peerId) ?? 0),
      )
      const total = counts.reduce((s, n) => s + n, 0)
      return order
        .map(
          (c, i) =>
            `${c.host} ${c.name}: ${counts[i]} (${((100 * counts[i]) / Math.max(1, total)).toFixed(0)} %)`,
        )
        .join(', ')
    }
    const most = Math.max(...samples.map((s) => s.near + s.far))
    const clientLog = mesh.log('client', 'proxy').split('\n')
    console.log(
      `near/far: cold start ${cold.ms.toFixed(0)} ms on near; under load (${all.length} requests, ` +
        `${failed.length} failed, ${summary(all)}, ${((Date.now() - started) / 1000).toFixed(0)} s): 2nd instance serving after ` +
        `${usableAt[1] ?? '-'} ms, 3rd after ${usableAt[2] ?? '-'} ms; containers created ` +
        `${order.map((c) => `${c.host} +${c.at - started} ms`).join(', ')}; most at once ${most}`,
    )
    console.log(`  requests per instance, whole run: ${share()}`)
    if (atThree != null) console.log(`  once three served: ${share(atThree)}`)
    for (const line of clientLog)
      if (/scal|allocat/.test(line)) console.log(`  client proxy: ${line}`)

    const why = `\n${JSON.stringify(samples)}\n${logs()}`
    assert.deepEqual(
      failed.map((a) => `${a.status} ${a.headers['x-mtc-error'] ?? ''} ${a.error ?? ''}`),
      [],
      `every request under load answered 200${why}`,
    )
    // Near first, to its capacity; then far; never a fourth.
    assert.deepEqual(
      order.map((c) => c.host),
      ['near', 'near', 'far'],
      `containers in the order they were created${why}`,
    )
    assert.ok(
      order.every((c) => c.running),
      `a container exited: ${JSON.stringify(order)}`,
    )
    assert.ok(most <= MAX_INSTANCES, `${most} containers at once${why}`)
    // None on far while near had room: far's was created after near's second.
    assert.ok(far[0].at > Math.max(...near.map((c) => c.at)), `far before near was full${why}`)
    // Serving, not only started: every instance answered some of the load.
    for (const c of order) {
      assert.ok((served.get(c.peerId)?.requests ?? 0) > 0, `${c.host} ${c.name} served nothing`)
    }
  })
})

if (skip != null) console.log(`near/far scenario skipped: ${skip}`)
