import assert from 'node:assert/strict'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { waitFor } from '@mtc/testkit'
import {
  type Component,
  type Daemon,
  type Instance,
  Mesh,
  type MeshSpec,
  metricSum,
  regionHosts,
  regionOf,
  regionsTopology,
  type StreamAnswer,
  THREE_REGIONS,
} from '../src/index.ts'
import { allocateOn, fourHosts, missing, summary } from '../test/scenario-helpers.ts'
import { costLines, measureHosts } from './measure.ts'

/**
 * Issue #18: the mesh on 30 simulated hosts (3 regions of 10), and the same upkeep
 * measurement on the 4-host WAN for comparison. Not in the normal suite (it takes
 * ~10 minutes on this machine): `pnpm test:scale`. Figures one per line, prefixed
 * `scale4:` / `scale30:`; the README's "30 hosts" section quotes them.
 */

/**
 * The daemons' niceness: 45 daemons share 2 cores with other jobs (load 20–70 here), where
 * each real host has its own CPU. At nice 0, CPU-starved daemons answered liveness pings
 * after > 2 s and cut each other's connections (requests then failed: see the README).
 * Not -10: the forwarder (the network) runs at -10 and must keep precedence.
 */
const MESH_NICE = -5

const SERVICE = 'hello-world-server'
const PATH = `/${SERVICE}/`
/** A quiet window long enough for several ping-monitor rounds (10 s) and probe rounds (1 s). */
const WINDOW_MS = 60_000
/** Scheduling noise on this loaded 2-core machine, added to every time bound. */
const NOISE_MS = 4_000
/** What the failover figures may exceed issue #18's targets by: the test process's own
 * timing (it sends a GET every 50 ms and reads the clock) on 2 cores shared with 30 hosts. */
const HARNESS_MS = 1_000
/** A request slower than this was held up by the fault (warm ones take ~10–300 ms here). */
const SLOW_MS = 1_000

const R = THREE_REGIONS
const [A, B, C] = R.regions
const hostsOf = (r: string) => regionHosts(R, r)
// Per region: host 0 infrastructure (a0 registry, b0 the second bootstrap, c0 a client),
// hosts 1–4 allocators (12 in all), hosts 5–9 clients.
const ALLOCATORS = R.regions.flatMap((r) => hostsOf(r).slice(1, 5))
const CLIENTS = [...R.regions.flatMap((r) => hostsOf(r).slice(5)), `${C}0`]

const SPEC30: MeshSpec = {
  topology: regionsTopology(R),
  registry: `${A}0`,
  bootstraps: [`${B}0`],
  allocators: ALLOCATORS,
  clients: CLIENTS,
  // In-region RTTs are 2–10 ms, the nearest other region 40 ms: a soft limit of 20 ms
  // has a client start an instance in its own region, a hard one of 35 ms (with room
  // for a noisy first sample) never sends it to another region.
  // Every allocator's dockerd is preloaded: the image ID is registered, not the ~130 MB
  // tarball (the fetch over the overlay is the 4-host fault scenario's; here its upload
  // through hl-service timed out on the loaded machine and only slowed the start).
  services: [{ name: SERVICE, softRttMs: 20, hardRttMs: 35, upload: false }],
  // One DHT check per region before the client proxies start: 16 at once (a node
  // process each) took longer than the check's 30 s on this 2-core machine.
  discoverFrom: R.regions.map((r) => regionHosts(R, r)[5]),
  nice: MESH_NICE,
  // MTC_SCALE_LOG_LEVEL=info: the daemons' decisions in the logs MTC_SCALE_LOGS keeps.
  logLevel: process.env.MTC_SCALE_LOG_LEVEL || undefined,
}

function line(prefix: string, figure: string, value: string): void {
  console.log(`${prefix}: ${figure}: ${value}`)
}

function statuses(answers: ReadonlyArray<{ status: number; code?: string; error?: string }>) {
  const by = new Map<string, number>()
  for (const a of answers) {
    const k = a.status === 0 ? `no answer (${a.error})` : `${a.status} ${a.code ?? ''}`.trim()
    by.set(k, (by.get(k) ?? 0) + 1)
  }
  return [...by].map(([k, n]) => `${n} × ${k}`).join(', ') || 'none'
}

/** What a failed answer says: the proxy's X-Mtc-Error code, or why none came. */
function codeOf(a: { headers: Record<string, string>; error?: string }): string {
  return a.headers['x-mtc-error'] ?? a.error ?? ''
}

const skip = missing()

/**
 * With MTC_SCALE_LOGS=DIR, every daemon's stderr and every instance's log are written to
 * DIR/<host>.<component>.log before the mesh goes (the in-memory logs die with it; a
 * failed scenario at this size is read from them).
 */
async function dumpLogs(mesh: Mesh): Promise<void> {
  const dir = process.env.MTC_SCALE_LOGS
  if (dir == null || dir === '') return
  await mkdir(dir, { recursive: true })
  const { registry, bootstraps = [], allocators, clients } = mesh.spec
  const kinds: Array<[string, Component]> = [
    [registry, 'bootstrap'],
    [registry, 'hl-service'],
    ...bootstraps.map((h): [string, Component] => [h, 'bootstrap']),
    ...allocators.map((h): [string, Component] => [h, 'allocator']),
    ...[...allocators, ...clients].map((h): [string, Component] => [h, 'proxy']),
  ]
  // Which peer is which: the logs name peers by ID only.
  const peers: string[] = []
  for (const [host, kind] of kinds) {
    let text = ''
    try {
      text = mesh.log(host, kind)
      peers.push(`${mesh.peerId(host, kind as Daemon)} ${host} ${kind}`)
    } catch {
      continue // no such daemon on that host
    }
    await writeFile(join(dir, `${host}.${kind}.log`), text)
  }
  for (const i of await mesh.instances().catch(() => [])) {
    peers.push(`${i.peerId} ${i.host} instance`)
    const r = await mesh.dockerd(i.host).docker(['logs', '-t', i.id], true)
    await writeFile(join(dir, `${i.host}.instance-${i.peerId.slice(-6)}.log`), r.stdout + r.stderr)
  }
  await writeFile(join(dir, 'peers.txt'), `${peers.join('\n')}\n`)
}

let current: Mesh | undefined
/** A client proxy's log and those of the allocators of its region, for a failure message. */
function logTail(client: string): string {
  const mesh = current
  if (mesh == null) return ''
  const region = regionOf(client)
  const allocs = mesh.spec.allocators.filter((h) => regionOf(h) === region)
  return [
    `--- proxy on ${client}:\n${mesh.log(client, 'proxy').slice(-3000)}`,
    ...allocs.map((h) => `--- allocator on ${h}:\n${mesh.log(h, 'allocator').slice(-1500)}`),
  ].join('\n')
}

describe('scale: the 4-host WAN, for comparison', { skip, timeout: 300_000 }, () => {
  let mesh: Mesh
  before(async () => {
    mesh = await Mesh.start({
      topology: fourHosts(),
      registry: 'registry',
      allocators: ['near', 'far'],
      clients: ['client'],
      services: [{ name: SERVICE, softRttMs: 20, hardRttMs: 35 }],
      nice: MESH_NICE,
    })
    line('scale4', 'mesh up', `${JSON.stringify(mesh.timings)} (ms after start)`)
  })
  after(async () => {
    await mesh?.destroy()
  })

  it('upkeep per host with the service in use', async () => {
    const cold = await mesh.request(PATH, { timeoutMs: 120_000 })
    assert.equal(cold.status, 200, `${cold.body}${cold.error ?? ''}`)
    const costs = await measureHosts(mesh, WINDOW_MS)
    for (const l of costLines(costs)) line('scale4', 'upkeep', l)
    line('scale4', 'forwarder (the network) so far', JSON.stringify(await mesh.topo.stats()))
    // The window saw the mesh's own traffic on every host.
    for (const c of costs) assert.ok(c.wireBps > 0, `${c.host} sent or received nothing`)
  })
})

describe('scale: 30 hosts in 3 regions', { skip, timeout: 1_800_000 }, () => {
  let mesh: Mesh
  /** Every instance's inbound counter, by peer ID (instances are listed once per scenario). */
  let instances: Instance[] = []
  const inbound = async () => {
    const out = new Map<string, number>()
    await Promise.all(
      instances.map(async (i) => {
        const text = await mesh.instanceMetrics(i).catch(() => '')
        out.set(i.peerId, metricSum(text, 'mtc_proxy_inbound_requests_total'))
      }),
    )
    return out
  }
  const hostOfInstance = (peerId: string) => instances.find((i) => i.peerId === peerId)?.host
  /**
   * Each scenario's precondition, whatever the ones before it did: an instance of the
   * service in every region (started on the region's first allocator where placement left
   * none), so one failing scenario does not hide the others' results.
   */
  const ensureInstances = async () => {
    instances = await mesh.instances(SERVICE)
    for (const r of R.regions) {
      if (instances.some((i) => regionOf(i.host) === r)) continue
      line(
        'scale30',
        'precondition',
        `no instance in region ${r}: starting one on ${hostsOf(r)[1]}`,
      )
      await allocateOn(mesh, hostsOf(r)[1], SERVICE, hostsOf(r)[5])
    }
    instances = await mesh.instances(SERVICE)
  }

  before(async () => {
    mesh = await Mesh.start(SPEC30)
    current = mesh
    line('scale30', 'mesh up', `${JSON.stringify(mesh.timings)} (ms after start)`)
  })
  after(async () => {
    if (mesh != null) await dumpLogs(mesh).catch((e) => console.log(`logs not written: ${e}`))
    await mesh?.destroy()
  })

  it('memory, CPU and upkeep per host kind, nothing in use', async () => {
    const costs = await measureHosts(mesh, WINDOW_MS)
    for (const l of costLines(costs)) line('scale30', 'idle', l)
    line('scale30', 'forwarder (the network) so far', JSON.stringify(await mesh.topo.stats()))
    for (const c of costs) assert.ok(c.wireBps > 0, `${c.host} sent or received nothing`)
  })

  it('placement: cold requests from each region start instances in that region (≥ 95 % served there)', async () => {
    // The first client of each region asks, one region after the other (three cold
    // starts at once overload this machine: see the README).
    const firsts = R.regions.map((r) => hostsOf(r)[5])
    const cold = []
    for (const client of firsts) {
      const a = await mesh.request(PATH, { client, timeoutMs: 120_000 })
      assert.equal(a.status, 200, `${client}: ${codeOf(a)} ${a.body}\n${logTail(client)}`)
      cold.push(a)
    }
    instances = await mesh.instances(SERVICE)
    const regions = new Set(instances.map((i) => regionOf(i.host)))
    assert.deepEqual([...regions].sort(), [...R.regions].sort(), 'an instance in every region')

    // Then 20 requests from every client, one client at a time, traced per instance.
    let inRegion = 0
    let total = 0
    const perRegion = new Map<string, { inRegion: number; total: number }>()
    // Every client is measured; failures are reported together at the end.
    const failed: string[] = []
    for (const client of CLIENTS) {
      const before = await inbound()
      const answers = await mesh.requests(PATH, 20, { client, timeoutMs: 60_000 })
      answers.forEach((a, k) => {
        if (a.status !== 200) failed.push(`${client} #${k}: ${a.status} ${codeOf(a)}`)
      })
      if (answers.some((a) => a.status !== 200)) console.log(logTail(client))
      // Instances a client started meanwhile (none expected) join the list.
      instances = await mesh.instances(SERVICE)
      const afterCounts = await inbound()
      for (const [peerId, n] of afterCounts) {
        const served = n - (before.get(peerId) ?? 0)
        if (served <= 0) continue
        const same = regionOf(hostOfInstance(peerId) ?? '') === regionOf(client)
        total += served
        if (same) inRegion += served
        const r = perRegion.get(regionOf(client)) ?? { inRegion: 0, total: 0 }
        r.total += served
        if (same) r.inRegion += served
        perRegion.set(regionOf(client), r)
      }
    }
    const share = inRegion / total
    line(
      'scale30',
      'placement: cold requests (first client of a, b, c at once)',
      cold.map((a, i) => `${firsts[i]} ${a.ms.toFixed(0)} ms`).join(', '),
    )
    line('scale30', 'placement: instances', instances.map((i) => `${i.host}`).join(', '))
    line(
      'scale30',
      'placement: requests served in the client’s region',
      `${inRegion} of ${total} (${(share * 100).toFixed(1)} %); ` +
        [...perRegion].map(([r, v]) => `${r}: ${v.inRegion}/${v.total}`).join(', '),
    )
    assert.deepEqual(failed, [], 'warm requests that failed')
    assert.ok(total >= CLIENTS.length * 20 * 0.9, `instances counted ${total} requests`)
    assert.ok(share >= 0.95, `only ${(share * 100).toFixed(1)} % served in region`)
  })

  it('discovery: every client knows every instance; a new client answers soon', async () => {
    await ensureInstances()
    // Every client uses the service (placement did unless it failed early)...
    for (const client of CLIENTS) await mesh.request(PATH, { client, timeoutMs: 30_000 })
    // ...and lists what it probes in mtc_proxy_upstream_rtt_seconds: every instance, within
    // two provider refreshes (10 s each) of its first request. Each client is watched on
    // its own (its scrapes are slow on this loaded machine): when it first knew them all.
    const asked = performance.now()
    const lacksOf = async (client: string) => {
      const text = await mesh.metrics(client, 'proxy').catch(() => '')
      return instances.filter((i) => !text.includes(`instance="${i.peerId}"`))
    }
    const knewAllAfter = await Promise.all(
      CLIENTS.map(async (client) => {
        await waitFor(
          `${client} knowing every instance`,
          async () => (await lacksOf(client)).length === 0,
          { timeoutMs: 20_000 + NOISE_MS, intervalMs: 1_000 },
        ).catch(() => {})
        return performance.now() - asked
      }),
    )
    const missingBy: string[] = []
    for (const client of CLIENTS) {
      for (const i of await lacksOf(client)) missingBy.push(`${client} lacks ${i.host}`)
    }
    line(
      'scale30',
      'discovery: every instance known by each client (seen by a scrape once a second)',
      `${Math.max(...knewAllAfter).toFixed(0)} ms at most after each had asked once ` +
        `(median ${knewAllAfter.sort((x, y) => x - y)[knewAllAfter.length >> 1].toFixed(0)} ms)`,
    )
    line(
      'scale30',
      'discovery: clients that know every instance',
      `${CLIENTS.length - new Set(missingBy.map((m) => m.split(' ')[0])).size} of ${CLIENTS.length}` +
        (missingBy.length > 0 ? ` (${missingBy.join(', ')})` : ''),
    )
    assert.deepEqual(missingBy, [])

    // A new client on a host that had none (an allocator host of region c).
    const host = hostsOf(C)[2]
    const t0 = performance.now()
    await mesh.add(host, 'proxy')
    const upMs = performance.now() - t0
    const first = await mesh.request(PATH, { client: host, timeoutMs: 60_000 })
    const firstMs = performance.now() - t0
    assert.equal(first.status, 200, `${first.body}${first.error ?? ''}`)
    line(
      'scale30',
      'discovery: a new client proxy',
      `listening after ${upMs.toFixed(0)} ms, first answer ${firstMs.toFixed(0)} ms after its start (the request ${first.ms.toFixed(0)} ms)`,
    )
  })

  it('upkeep per host kind with the service in use (no requests)', async () => {
    const costs = await measureHosts(mesh, WINDOW_MS)
    for (const l of costLines(costs)) line('scale30', 'in use', l)
    line('scale30', 'forwarder (the network) so far', JSON.stringify(await mesh.topo.stats()))
  })

  it('a host of region a dies: its clients move to the next-nearest instance, no GET fails', async () => {
    await ensureInstances()
    const client = hostsOf(A)[5]
    const second = hostsOf(A)[6]
    // Two instances in region a: the placement one and one on another region-a allocator.
    const inA = () => instances.filter((i) => regionOf(i.host) === A)
    if (inA().length < 2) {
      const spare = hostsOf(A)
        .slice(1, 5)
        .find((h) => !inA().some((i) => i.host === h))
      assert.ok(spare != null, 'a region-a allocator without an instance')
      await allocateOn(mesh, spare, SERVICE, client)
    }
    instances = await mesh.instances(SERVICE)
    assert.ok(inA().length >= 2, 'two instances in region a')

    // The instance the client uses now: its host is the one to die.
    const used = await waitFor(
      `${client} sending its requests to one instance`,
      async () => {
        const before = await inbound()
        await mesh.requests(PATH, 10, { client, timeoutMs: 10_000 })
        const afterCounts = await inbound()
        const top = [...afterCounts]
          .map(([p, n]) => [p, n - (before.get(p) ?? 0)] as const)
          .sort((x, y) => y[1] - x[1])[0]
        return top != null && top[1] >= 9 ? top[0] : undefined
      },
      { timeoutMs: 60_000, intervalMs: 500 },
    )
    const victim = hostOfInstance(used) as string
    assert.equal(regionOf(victim), A, 'the client used an instance of its region')
    const survivors = inA().filter((i) => i.host !== victim)

    const lead = 2_000
    const streams = [client, second].map((c) =>
      mesh.requestStream(PATH, {
        client: c,
        intervalMs: 50,
        durationMs: lead + 12_000,
        timeoutMs: 40_000,
      }),
    )
    await sleep(lead)
    const before = await inbound()
    const cutFrom = Date.now()
    await mesh.topo.cut(victim)
    const cutAt = Date.now()
    let results: StreamAnswer[][]
    try {
      results = await Promise.all(streams.map((s) => s.done))
    } finally {
      await mesh.topo.restore(victim)
    }
    const afterCounts = await inbound()
    const servedBySurvivors = survivors.reduce(
      (n, i) => n + (afterCounts.get(i.peerId) ?? 0) - (before.get(i.peerId) ?? 0),
      0,
    )

    const failedAll: string[] = []
    let worstSteady = 0
    let worstHeld = 0
    results.forEach((answers, k) => {
      const who = k === 0 ? client : second
      const afterCut = answers.filter((a) => a.at >= cutAt)
      const failed = answers.filter((a) => a.status !== 200)
      let steadyIdx = afterCut.length
      while (
        steadyIdx > 0 &&
        afterCut[steadyIdx - 1].status === 200 &&
        afterCut[steadyIdx - 1].ms < SLOW_MS
      ) {
        steadyIdx--
      }
      // New requests: from this send time on none was held up by the dead host.
      const steady = steadyIdx < afterCut.length ? afterCut[steadyIdx].at - cutFrom : Number.NaN
      const held = answers.filter((a) => a.ms >= SLOW_MS)
      const lastHeldDone = Math.max(0, ...held.map((a) => a.at + a.ms - cutFrom))
      worstSteady = Math.max(worstSteady, Number.isNaN(steady) ? Number.POSITIVE_INFINITY : steady)
      worstHeld = Math.max(worstHeld, lastHeldDone)
      for (const a of failed) {
        failedAll.push(
          `${who} #${a.i} +${(a.at - cutFrom).toFixed(0)} ms: ${a.status} ${a.code} ${a.error ?? ''}`,
        )
      }
      line(
        'scale30',
        `host dies: client ${who}`,
        `${answers.length} requests (one every 50 ms), ${failed.length} failed (${statuses(failed)}); ` +
          `new requests unaffected from ${steady.toFixed(0)} ms after the cut; ` +
          `${held.length} held up (≥ ${SLOW_MS} ms), the last answered ${lastHeldDone.toFixed(0)} ms after the cut; ` +
          `after: ${summary(afterCut.slice(steadyIdx))}`,
      )
    })
    line(
      'scale30',
      'host dies',
      `cut ${victim} (instance ${used.slice(-6)}); requests served meanwhile by the other region-a ` +
        `instance(s) (${survivors.map((s) => s.host).join(', ')}): ${servedBySurvivors}`,
    )
    assert.deepEqual(failedAll, [], 'no GET may fail')
    assert.ok(servedBySurvivors > 0, 'the next-nearest instance took the traffic')
    // Targets of issue #18: new requests within 2 s, in flight within 3 s, plus HARNESS_MS
    // for the timing of a test process that shares 2 cores with 30 hosts.
    assert.ok(
      worstHeld <= 3_000 + HARNESS_MS,
      `a held request ended ${worstHeld} ms after the cut (target 3 s)`,
    )
    assert.ok(
      worstSteady <= 2_000 + HARNESS_MS,
      `new requests unaffected only from ${worstSteady} ms (target 2 s)`,
    )
  })

  it('a bootstrap dies: the mesh keeps working and a new peer joins through the other', async () => {
    await ensureInstances()
    await mesh.kill(`${A}0`, 'bootstrap')
    const t0 = performance.now()
    for (const r of R.regions) {
      const client = hostsOf(r)[7]
      const answers = await mesh.requests(PATH, 5, { client, timeoutMs: 10_000 })
      assert.deepEqual(
        answers.map((a) => `${a.status} ${a.status === 200 ? '' : codeOf(a)}`.trim()),
        Array(5).fill('200'),
        `requests from ${client}\n${logTail(client)}`,
      )
    }
    const host = hostsOf(B)[3] // an allocator host without a client proxy
    await mesh.add(host, 'proxy')
    const joined = mesh.peerId(host, 'proxy')
    await waitFor(
      `the new proxy in ${B}0's bootstrap's peer table`,
      async () => {
        const r = await mesh.topo.httpGet(`${B}0`, 'http://127.0.0.1:9100/peers')
        return (JSON.parse(r.body) as Array<{ peerId: string }>).some((p) => p.peerId === joined)
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    )
    const joinedMs = performance.now() - t0
    const first = await mesh.request(PATH, { client: host, timeoutMs: 60_000 })
    assert.equal(first.status, 200, `${first.body}${first.error ?? ''}`)
    const firstMs = performance.now() - t0
    line(
      'scale30',
      'bootstrap dies',
      `requests from a7, b7, c7 5 × 200 each; a new proxy on ${host} in ${B}0's /peers after ` +
        `${joinedMs.toFixed(0)} ms, its first request 200 after ${firstMs.toFixed(0)} ms`,
    )
  })
})

if (skip != null) console.log(`scale scenarios skipped: ${skip}`)
