/**
 * Issue #15 scenarios on loopback with real Docker, a real hl-service (etcd), a real
 * allocator and a client proxy: a steady load of one GET every 20 ms while the service is
 * updated (v1 → v2), updated to an image that never gets healthy, rolled back, and while
 * its only instance starts failing its health path.
 */
import assert from 'node:assert/strict'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it, type TestContext } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import { formatSwarmKey, generatePsk } from '@mtc/p2pnode'
import {
  docker,
  ensureImages,
  freePort,
  httpGet,
  type LaunchedDaemon,
  LocalMesh,
  metricValue,
  type Proc,
  removeContainers,
  runToEnd,
  stopAll,
  waitFor,
} from '@mtc/testkit'
import { LABEL_IMAGE_ID, LABEL_MANAGED_BY } from '../src/constants.ts'

const psk = generatePsk()
const V2_IMAGE = `mtc-test/rolling-v2:${process.pid}`
const BAD_IMAGE = `mtc-test/rolling-bad:${process.pid}`
const SERVICE = 'rolling'
const HEALTH = [
  '--health-path',
  '/healthz',
  '--health-interval',
  '500ms',
  '--health-threshold',
  '2',
]
/** One GET every this often, as the scenarios ask. */
const LOAD_INTERVAL_MS = 20

let mesh: LocalMesh
let dir: { path: string }
let pskFile: string
let pm: LaunchedDaemon
let hl: LaunchedDaemon
let alloc: { proc?: Proc; addr: string; peerId: string; metrics: string }
let gateway: number
let clientProxy: Proc

/** The daemons' last log lines, for a failure message. */
function logs(): string {
  const tail = (p: Proc | undefined) => (p?.stderr() ?? '').split('\n').slice(-40).join('\n')
  return `\n--- client proxy:\n${tail(clientProxy)}\n--- allocator:\n${tail(alloc?.proc)}`
}
const ids: { v1: string; v2: string; bad: string } = { v1: '', v2: '', bad: '' }

async function imageId(ref: string): Promise<string> {
  return (await docker(['image', 'inspect', '-f', '{{.Id}}', ref])).stdout.trim()
}

async function buildVariant(tag: string, env: string): Promise<void> {
  const ctx = join(dir.path, tag.replace(/[/:]/g, '-'))
  await mkdir(ctx, { recursive: true })
  await writeFile(join(ctx, 'Dockerfile'), `FROM mtc/hello-world-server:1.0\nENV ${env}\n`)
  const r = await runToEnd('docker', ['build', '--network=host', '-q', '-t', tag, ctx], {
    env: { ...process.env, DOCKER_BUILDKIT: '0' },
    timeoutMs: 120_000,
  })
  assert.equal(r.code, 0, r.stderr)
}

async function cli(args: string[], timeoutMs = 30_000) {
  return await runToEnd(
    'hl-cli',
    ['--psk-file', pskFile, '--hl', hl.addr, '--bootstrap', pm.addr, ...args],
    { timeoutMs: timeoutMs + 10_000 },
  )
}

async function register(image: string, id: string): Promise<number> {
  const r = await cli(['--json', 'add', '--image-id', id, ...HEALTH, image, SERVICE])
  assert.equal(r.code, 0, r.stderr)
  return (JSON.parse(r.stdout) as { version: number }).version
}

/** Running containers of this file's allocator running image `id`. */
async function containersOf(id: string, all = false): Promise<string[]> {
  const out = (
    await docker([
      'ps',
      ...(all ? ['-a'] : []),
      '-q',
      '--filter',
      `label=${LABEL_MANAGED_BY}=${alloc.peerId}`,
      '--filter',
      `label=${LABEL_IMAGE_ID}=${id}`,
    ])
  ).stdout.trim()
  return out === '' ? [] : out.split('\n')
}

interface Answer {
  at: number
  status: number
  body: string
}

/**
 * A GET of /SERVICE/ every LOAD_INTERVAL_MS (each with its own 30 s deadline, at most 100
 * in flight) until stop(), which resolves with every answer (status 0: no answer).
 */
function steadyLoad(t: TestContext): { answers: Answer[]; stop: () => Promise<Answer[]> } {
  const answers: Answer[] = []
  const inFlight = new Set<Promise<void>>()
  let stopped = false
  const url = `http://127.0.0.1:${gateway}/${SERVICE}/`
  const loop = (async () => {
    while (!stopped) {
      if (inFlight.size < 100) {
        const at = performance.now()
        const p: Promise<void> = fetch(url, { signal: AbortSignal.timeout(30_000) })
          .then(async (r) => {
            answers.push({ at, status: r.status, body: await r.text() })
          })
          .catch((err: Error) => {
            answers.push({ at, status: 0, body: err.message })
          })
          .finally(() => inFlight.delete(p))
        inFlight.add(p)
      }
      await sleep(LOAD_INTERVAL_MS)
    }
  })()
  const stop = async (): Promise<Answer[]> => {
    stopped = true
    await loop
    await Promise.allSettled([...inFlight])
    return answers.sort((a, b) => a.at - b.at)
  }
  // Also when the test fails half-way.
  t.after(stop)
  return { answers, stop }
}

/**
 * Long requests back to back until stop(): GET /slow streaming 20 lines over 2 s, so one
 * is nearly always in flight when an old instance is stopped. Resolves with those that
 * did not end complete (status 0: the stream was cut).
 */
function longRequests(t: TestContext): { stop: () => Promise<{ total: number; cut: Answer[] }> } {
  const cut: Answer[] = []
  let total = 0
  let stopped = false
  const url = `http://127.0.0.1:${gateway}/${SERVICE}/slow?ms=100&chunks=20`
  const loop = (async () => {
    while (!stopped) {
      const at = performance.now()
      total++
      try {
        const r = await fetch(url, { signal: AbortSignal.timeout(30_000) })
        const body = await r.text()
        if (r.status !== 200 || !body.includes('chunk 20 '))
          cut.push({ at, status: r.status, body })
      } catch (err) {
        cut.push({ at, status: 0, body: (err as Error).message })
      }
    }
  })()
  const stop = async () => {
    stopped = true
    await loop
    return { total, cut }
  }
  t.after(stop)
  return { stop }
}

function failures(answers: Answer[]): Answer[] {
  return answers.filter((a) => a.status !== 200)
}

before(async () => {
  mesh = await LocalMesh.create({ swarmKey: formatSwarmKey(psk), prefix: 'mtc-rolling-' })
  dir = { path: mesh.dir }
  pskFile = mesh.pskFile
  await ensureImages()
  ids.v1 = await imageId('mtc/hello-world-server:1.0')
  // The variants only the tests use, built while the mesh starts and v1 cold-starts.
  const variants = (async () => {
    await Promise.all([
      buildVariant(V2_IMAGE, 'HELLO_TEXT="Hello from v2"'),
      buildVariant(BAD_IMAGE, 'HEALTH_FAIL=1'),
    ])
    ids.v2 = await imageId(V2_IMAGE)
    ids.bad = await imageId(BAD_IMAGE)
  })()
  variants.catch(() => {}) // awaited below

  pm = await mesh.startBootstrap()
  hl = await mesh.startHlService()
  const portBase = 23000 + Math.floor(Math.random() * 60) * 100
  const a = await mesh.startAllocator(
    [
      '--port-range',
      `${portBase}-${portBase + 99}`,
      '--max-instances',
      '4',
      // The never-healthy image fails within this (the default 30 s; a loaded host needs it).
      '--start-timeout',
      '30s',
    ],
    { dataDir: join(dir.path, 'alloc') },
  )
  alloc = { proc: a.proc, addr: a.addr, peerId: a.peerId, metrics: `http://${a.plan.metrics}` }

  ids.v1 && (await register('mtc/hello-world-server:1.0', ids.v1))
  gateway = await freePort()
  clientProxy = (await mesh.startProxy([String(gateway)])).proc as Proc
  // The first request starts the v1 instance.
  await waitFor(
    'v1 answering through the client proxy',
    async () => {
      const r = await httpGet(`http://127.0.0.1:${gateway}/${SERVICE}/`).catch(() => undefined)
      return r?.status === 200 && /Hello, world/.test(r.body) ? true : undefined
    },
    // A cold start on 2 cores shared with other test suites: generous.
    { timeoutMs: 180_000, intervalMs: 500 },
  )
  await variants
})

after(async () => {
  await mesh?.stop()
  await stopAll()
  if (alloc != null) await removeContainers(`${LABEL_MANAGED_BY}=${alloc.peerId}`).catch(() => {})
  await docker(['rmi', '-f', V2_IMAGE, BAD_IMAGE], { allowFail: true }).catch(() => {})
})

describe('rolling updates under a steady load (real Docker)', () => {
  let v1Version = 0

  it('v1 → v2: no failed request, every answer v2 within 30 s, no v1 container left, rollout status done', async (t) => {
    v1Version = JSON.parse((await cli(['--json', 'get', SERVICE])).stdout).version
    const load = steadyLoad(t)
    const long = longRequests(t)
    await sleep(1_000)
    const t0 = performance.now()
    await register(V2_IMAGE, ids.v2)
    const doneAt = await waitFor(
      'every answer from v2 and no v1 container',
      async () => {
        const recent = load.answers.filter((a) => a.at > performance.now() - 1_000)
        const allV2 = recent.length > 10 && recent.every((a) => /Hello from v2/.test(a.body))
        return allV2 && (await containersOf(ids.v1)).length === 0 ? performance.now() : undefined
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    ).catch((err: Error) => {
      const failed = failures(load.answers)
      throw new Error(`${err.message}; ${failed.length} failed, e.g. ${JSON.stringify(failed[0])}`)
    })
    const status = await cli(['rollout', 'status', SERVICE])
    await sleep(1_000)
    const answers = await load.stop()
    const slow = await long.stop()
    const during = answers.filter((a) => a.at >= t0 && a.at <= doneAt)
    console.log(
      `update v1 -> v2: ${Math.round(doneAt - t0)} ms, ${during.length} requests during it, ${answers.length} in all, ${failures(answers).length} failed; ${slow.total} 2-s streams, ${slow.cut.length} cut`,
    )
    assert.deepEqual(failures(answers), [])
    // Drained, not killed: the streams in flight on v1 ended complete.
    assert.deepEqual(slow.cut, [])
    assert.equal(status.code, 0, status.stdout + status.stderr)
    assert.match(status.stdout, /: done/)
    assert.equal((await containersOf(ids.v1, true)).length, 0)
    const { body } = await httpGet(`${alloc.metrics}/metrics`)
    assert.equal(metricValue(body, 'mtc_allocator_rollouts_total', { outcome: 'done' }), 1)
  })

  it('an image that never gets healthy: v2 keeps serving, rollout status fails clearly, no unhealthy container left', async (t) => {
    const load = steadyLoad(t)
    await sleep(500)
    await register(BAD_IMAGE, ids.bad)
    const status = await cli(['rollout', 'status', '--timeout', '90s', SERVICE], 90_000)
    await sleep(1_000)
    const answers = await load.stop()
    console.log(
      `update to a never-healthy image: ${answers.length} requests, ${failures(answers).length} failed; rollout status: ${status.stdout.trim().split('\n').at(-1)}`,
    )
    assert.equal(status.code, 7, status.stdout + status.stderr)
    assert.match(status.stderr, /not ready.*ERR_ROLLOUT_FAILED/s)
    assert.deepEqual(failures(answers), [])
    assert.ok(answers.every((a) => /Hello from v2/.test(a.body)))
    assert.equal((await containersOf(ids.bad, true)).length, 0, 'an unhealthy container is left')
    assert.equal((await containersOf(ids.v2)).length, 1)
  })

  it('rollback to v1 under the same load: no failed request, rollout status done', async (t) => {
    const history = await cli(['history', SERVICE])
    assert.equal(history.code, 0, history.stderr)
    assert.match(history.stdout, new RegExp(`^${v1Version} `, 'm'))
    const load = steadyLoad(t)
    await sleep(500)
    const t0 = performance.now()
    const back = await cli(['--json', 'rollback', '--to', String(v1Version), SERVICE])
    assert.equal(back.code, 0, back.stderr)
    assert.equal(JSON.parse(back.stdout).imageId, ids.v1)
    const status = await cli(['rollout', 'status', '--timeout', '60s', SERVICE], 60_000)
    const doneAt = performance.now()
    const rolledBack = waitFor(
      'every answer from v1',
      async () => {
        const recent = load.answers.filter((a) => a.at > performance.now() - 1_000)
        return recent.length > 10 && recent.every((a) => /Hello, world/.test(a.body))
          ? true
          : undefined
      },
      { timeoutMs: 60_000, intervalMs: 250 },
    )
    await rolledBack.catch((err: Error) => {
      const failed = failures(load.answers)
      throw new Error(
        `${err.message}; ${failed.length} failed, e.g. ${JSON.stringify(failed[0])}; rollout status: ${status.stdout}${logs()}`,
      )
    })
    const answers = await load.stop()
    console.log(
      `rollback to v1: ${Math.round(doneAt - t0)} ms, ${answers.length} requests, ${failures(answers).length} failed`,
    )
    assert.equal(status.code, 0, status.stdout + status.stderr)
    assert.deepEqual(failures(answers), [])
    assert.equal((await containersOf(ids.v2, true)).length, 0)
  })

  it('an instance whose health path starts failing stops getting traffic and is replaced', async (t) => {
    const [sick] = await containersOf(ids.v1)
    assert.ok(sick != null)
    const load = steadyLoad(t)
    await sleep(500)
    const failing = await fetch(`http://127.0.0.1:${gateway}/${SERVICE}/healthz/fail`, {
      method: 'POST',
    })
    assert.equal(failing.status, 200)
    const t0 = performance.now()
    let running: string[] = []
    const replacedAt = await waitFor(
      'the failing instance replaced',
      async () => {
        // The requests held while no instance was usable reach the replacement at once,
        // which load-aware scaling may answer with a second one: count the sick one gone.
        running = await containersOf(ids.v1)
        return running.length >= 1 && !running.includes(sick) ? performance.now() : undefined
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    ).catch((err: Error) => {
      throw new Error(`${err.message}: v1 containers ${running.join(' ')} (sick ${sick})${logs()}`)
    })
    // Served by the replacement from then on.
    await sleep(2_000)
    const answers = await load.stop()
    const after = answers.filter((a) => a.at > replacedAt + 1_000)
    console.log(
      `failing health path: replaced in ${Math.round(replacedAt - t0)} ms; ${answers.length} requests, ${failures(answers).length} failed`,
    )
    assert.ok(after.length > 5, `${after.length} answers after the replacement${logs()}`)
    assert.deepEqual(failures(after), [])
    const { body } = await httpGet(`${alloc.metrics}/metrics`)
    // At least this one (on a loaded host, a replacement's own slow health answers may add one).
    assert.ok(
      (metricValue(body, 'mtc_allocator_unhealthy_replacements_total', { service: SERVICE }) ??
        0) >= 1,
    )
  })
})
