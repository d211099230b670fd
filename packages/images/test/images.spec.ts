/**
 * The images end to end: mtc/hello-world-server:1.0 (and hello-caller) run with host
 * networking and the allocator's environment and mounts, reached from a client proxy
 * through a ping-monitor bootstrap on loopback.
 */
import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, test } from 'node:test'
import {
  docker,
  ensureImages,
  freePort,
  httpGet,
  IMAGE_BUILD_TIMEOUT_MS,
  type Proc,
  removeContainers,
  run,
  runToEnd,
  startDaemon,
  stopAll,
  tempDir,
  waitFor,
} from '@mtc/testkit'

/** Every container this file starts carries it, so `after()` removes them all. */
const LABEL = 'mtc.test=images'
/** A first request goes through discovery and probing of a fresh instance: a few s. */
const FIRST_ANSWER_TIMEOUT_MS = 30_000
/** `docker stop` must end an instance well within Docker's own 10 s grace. */
const STOP_LIMIT_MS = 5_000
/** Per test: container start, overlay join, one or two requests. */
const TEST_TIMEOUT_MS = 60_000
/** The entrypoint's SIGTERM→SIGKILL grace (src/entrypoint.ts STOP_GRACE_MS). */
const ENTRYPOINT_GRACE_MS = 9_000

let dir: { path: string; remove: () => Promise<void> }
let pskFile: string
let identityFile: string
let peerId: string
let bootstrap: string
let pingMetricsPort: number
let clientPort: number
const procs: Proc[] = []

async function keygen(args: string[]): Promise<string> {
  const r = await runToEnd('mtc-keygen', args)
  assert.equal(r.code, 0, r.stderr)
  return r.stdout.trim()
}

/** `docker run -d` of an instance as the allocator would; returns the container ID. */
async function startInstance(
  image: string,
  service: string,
  extraEnv: Record<string, string> = {},
): Promise<{ id: string; proxyPort: number; metricsPort: number }> {
  const [proxyPort, servicePort, metricsPort] = [
    await freePort(),
    await freePort(),
    await freePort(),
  ]
  const env: Record<string, string> = {
    PROXY_PORT: String(proxyPort),
    PROXY_IP: '127.0.0.1',
    SERVICE_PORT: String(servicePort),
    SERVICE_NAME: service,
    METRICS_PORT: String(metricsPort),
    P2P_BOOTSTRAPS: bootstrap,
    ...extraEnv,
  }
  const args = ['run', '-d', '--label', LABEL, '--network', 'host']
  for (const [k, v] of Object.entries(env)) args.push('-e', `${k}=${v}`)
  args.push('-v', `${pskFile}:/run/mtc/swarm.key:ro`)
  if (service === 'hello-world-server') args.push('-v', `${identityFile}:/run/mtc/identity.key:ro`)
  const id = (await docker([...args, image])).stdout.trim()
  return { id, proxyPort, metricsPort }
}

/** The first 200 answer of `service` through the client proxy (its instance may still be joining). */
async function firstAnswer(service: string): Promise<{ status: number; body: string }> {
  return await waitFor(
    `${service} through the client proxy`,
    async () => {
      const r = await httpGet(`http://127.0.0.1:${clientPort}/${service}/`)
      return r.status === 200 ? r : undefined
    },
    { timeoutMs: FIRST_ANSWER_TIMEOUT_MS, intervalMs: 500 },
  )
}

let hello: { id: string; proxyPort: number; metricsPort: number }

before(
  async () => {
    await ensureImages()
    await removeContainers(LABEL)
    dir = await tempDir('mtc-images-')
    pskFile = join(dir.path, 'swarm.key')
    identityFile = join(dir.path, 'identity.key')
    await keygen(['swarm-key', '--out', pskFile])
    peerId = await keygen(['identity', '--key-file', identityFile])
    pingMetricsPort = await freePort()
    const pm = await startDaemon(
      'ping-monitor',
      [
        '--psk-file',
        pskFile,
        '--listen',
        '/ip4/127.0.0.1/tcp/0',
        '--metrics',
        `127.0.0.1:${pingMetricsPort}`,
      ],
      dir.path,
    )
    procs.push(pm.proc)
    bootstrap = pm.addr
    clientPort = await freePort()
    const clientMetrics = await freePort()
    procs.push(
      run('proxy', [
        '--psk-file',
        pskFile,
        '--bootstrap',
        bootstrap,
        '--metrics',
        `127.0.0.1:${clientMetrics}`,
        String(clientPort),
      ]),
    )
    hello = await startInstance('mtc/hello-world-server:1.0', 'hello-world-server')
  },
  { timeout: IMAGE_BUILD_TIMEOUT_MS + TEST_TIMEOUT_MS },
)

after(async () => {
  await removeContainers(LABEL).catch(() => {})
  await Promise.all(procs.map((p) => p.stop(5000)))
  await stopAll()
  await dir?.remove()
})

test('hello-world-server answers through the overlay from its container', {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const answer = await firstAnswer('hello-world-server')
  assert.equal(answer.body, 'Hello, world\n')
})

test('the image serves /bytes/:n, the answers of the benchmarks (1 KB and bulk)', {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  for (const n of [1024, 10 * 1024 * 1024]) {
    const res = await fetch(`http://127.0.0.1:${clientPort}/hello-world-server/bytes/${n}`)
    assert.equal(res.status, 200)
    assert.equal(res.headers.get('content-length'), String(n))
    assert.equal((await res.arrayBuffer()).byteLength, n)
  }
})

test("the instance's peer ID is the mounted identity's", { timeout: TEST_TIMEOUT_MS }, async () => {
  const peers = await waitFor('the instance in the ping-monitor table', async () => {
    const list = (await (await fetch(`http://127.0.0.1:${pingMetricsPort}/peers`)).json()) as {
      peerId: string
      role?: string
    }[]
    return list.find((p) => p.peerId === peerId)
  })
  assert.equal(peers.role, 'proxy')
  const logs = await docker(['logs', hello.id])
  assert.match(logs.stderr, new RegExp(`peer ${peerId} listening on /ip4/127\\.0\\.0\\.1/tcp/`))
})

test('the PSK is nowhere in docker inspect, and the service cannot read the key files', {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const hex = (await readFile(pskFile, 'utf8')).trim().split('\n').at(-1)!
  assert.match(hex, /^[0-9a-f]{64}$/)
  const inspect = (await docker(['inspect', hello.id])).stdout
  assert.ok(!inspect.toLowerCase().includes(hex), 'the PSK appears in docker inspect')
  const [info] = JSON.parse(inspect) as { Config: { Env: string[] } }[]
  assert.ok(!info.Config.Env.some((e) => e.startsWith('P2P_PSK')), info.Config.Env.join(' '))
  // The service runs as nobody; the proxy (root) alone reads the 0600 key files.
  const top = (await docker(['top', hello.id, '-eo', 'pid,uid,args'])).stdout
  assert.match(top, /^\d+\s+65534\s+node \/app\/hello-world-server\.mjs$/m)
  for (const file of ['/run/mtc/swarm.key', '/run/mtc/identity.key']) {
    const read = await docker(
      ['exec', '-u', '65534', hello.id, 'node', '-e', `require('fs').readFileSync('${file}')`],
      { allowFail: true },
    )
    assert.notEqual(read.code, 0)
    assert.match(read.stderr, /EACCES/)
  }
})

test('hello-caller calls hello-world-server through its own proxy (service to service)', {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  await startInstance('mtc/hello-caller:1.0', 'hello-caller')
  const answer = await firstAnswer('hello-caller')
  assert.equal(answer.body, 'hello-caller asked hello-world-server: 200 Hello, world\n')
})

test('docker stop ends an instance cleanly within a few seconds', {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const started = Date.now()
  await docker(['stop', '-t', '10', hello.id])
  const took = Date.now() - started
  assert.ok(took < STOP_LIMIT_MS, `docker stop took ${took} ms`)
  const code = (await docker(['inspect', '-f', '{{.State.ExitCode}}', hello.id])).stdout.trim()
  assert.equal(code, '0')
  const logs = (await docker(['logs', hello.id])).stderr
  assert.match(logs, /mtc-entrypoint: SIGTERM: stopping proxy and service/)
  assert.match(logs, /mtc-entrypoint: proxy exited with code 0/)
  assert.match(logs, /mtc-entrypoint: service exited with code 0/)
})

test('a missing variable: one clear line and exit code 2', {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const r = await docker(
    [
      'run',
      '--label',
      LABEL,
      '--network',
      'host',
      '-e',
      'PROXY_PORT=1',
      '-e',
      'PROXY_IP=127.0.0.1',
      '-e',
      'SERVICE_NAME=hello-world-server',
      '-v',
      `${pskFile}:/run/mtc/swarm.key:ro`,
      'mtc/hello-world-server:1.0',
    ],
    { allowFail: true },
  )
  assert.equal(r.code, 2)
  assert.equal(
    r.stderr,
    'mtc-entrypoint: missing environment: SERVICE_PORT, P2P_BOOTSTRAPS (set by the allocator)\n',
  )
})

test('when the service fails, the proxy is stopped and the container exits with its code', {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const r = await docker(
    [
      'run',
      '--label',
      LABEL,
      '--network',
      'host',
      ...['-e', `PROXY_PORT=${await freePort()}`, '-e', 'PROXY_IP=127.0.0.1'],
      ...['-e', `SERVICE_PORT=${await freePort()}`, '-e', 'SERVICE_NAME=failing'],
      ...['-e', `P2P_BOOTSTRAPS=${bootstrap}`, '-v', `${pskFile}:/run/mtc/swarm.key:ro`],
      'mtc/base:0.1.0',
      ...['node', '-e', 'setTimeout(() => process.exit(3), 500)'],
    ],
    { allowFail: true },
  )
  assert.equal(r.code, 3, r.stderr)
  assert.match(r.stderr, /mtc-entrypoint: service exited with code 3\n/)
  assert.match(r.stderr, /mtc-entrypoint: proxy exited with code 0\n/)
})

test('a child that ignores SIGTERM gets SIGKILL after the 9 s grace, before docker stop gives up', {
  timeout: TEST_TIMEOUT_MS,
}, async (t) => {
  const proxyPort = await freePort()
  const id = (
    await docker([
      'run',
      '-d',
      '--label',
      LABEL,
      '--network',
      'host',
      ...['-e', `PROXY_PORT=${proxyPort}`, '-e', 'PROXY_IP=127.0.0.1'],
      ...['-e', `SERVICE_PORT=${await freePort()}`, '-e', 'SERVICE_NAME=stubborn'],
      ...['-e', `P2P_BOOTSTRAPS=${bootstrap}`, '-v', `${pskFile}:/run/mtc/swarm.key:ro`],
      'mtc/base:0.1.0',
      ...[
        'node',
        '-e',
        "process.on('SIGTERM', () => {}); console.log('ignoring SIGTERM'); setInterval(() => {}, 1000)",
      ],
    ])
  ).stdout.trim()
  t.after(() => docker(['rm', '-f', id], { allowFail: true }))
  await waitFor(
    'the service ignoring SIGTERM',
    async () => /ignoring SIGTERM/.test((await docker(['logs', id])).stdout),
    { timeoutMs: 20_000, intervalMs: 200 },
  )
  // The proxy up too (its gateway answers), so that it stops gracefully: exit code 0.
  await waitFor(
    'the proxy gateway',
    async () => (await fetch(`http://127.0.0.1:${proxyPort}/`)).status > 0,
    { timeoutMs: 30_000, intervalMs: 200 },
  )
  // docker's own SIGKILL would come after 30 s: the entrypoint's comes after 9 s.
  const started = Date.now()
  await docker(['stop', '-t', '30', id], { timeoutMs: 60_000 })
  const took = Date.now() - started
  const logs = (await docker(['logs', id])).stderr
  assert.ok(took >= ENTRYPOINT_GRACE_MS - 500, `stopped after ${took} ms:\n${logs}`)
  assert.ok(took < ENTRYPOINT_GRACE_MS + 8_000, `stopped after ${took} ms:\n${logs}`)
  assert.match(logs, /mtc-entrypoint: service still running after 9000 ms: SIGKILL\n/)
  assert.match(logs, /mtc-entrypoint: service exited with code 137 \(SIGKILL\)\n/)
  assert.match(logs, /mtc-entrypoint: proxy exited with code 0\n/)
  const code = (await docker(['inspect', '-f', '{{.State.ExitCode}}', id])).stdout.trim()
  assert.equal(code, '137')
})
