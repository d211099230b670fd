/**
 * The images end to end: mtc/hello-world-server:1.0 (and hello-caller) run with host
 * networking and the allocator's environment and mounts, reached from a client proxy
 * through a ping-monitor bootstrap on loopback.
 */
import assert from 'node:assert/strict'
import { chmod, copyFile, readFile, rm, writeFile } from 'node:fs/promises'
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

const NO_NEW_PRIVS = ['--security-opt', 'no-new-privileges']
const FAIL_WHEN_PROXY_UP = `const net = require('node:net')
const up = (n) => net.connect(Number(process.env.PROXY_PORT), '127.0.0.1')
  .on('connect', () => process.exit(3))
  .on('error', () => (n > 0 ? setTimeout(up, 100, n - 1) : process.exit(4)))
up(300)`

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
  // As the allocator runs instances: no binary of the image may regain privileges.
  const args = ['run', '-d', '--label', LABEL, '--network', 'host', ...NO_NEW_PRIVS]
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
  await docker(['rmi', '-f', 'mtc-test/key-thief:1'], { allowFail: true }).catch(() => {})
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

test("the image's proxy runs the PSK layer on libsodium (the addon beside its bundle)", {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  await firstAnswer('hello-world-server')
  const metrics = await httpGet(`http://127.0.0.1:${hello.metricsPort}/metrics`)
  assert.equal(metrics.status, 200)
  assert.match(metrics.body, /^mtc_psk_xor_backend_info\{backend="sodium-native"\} 1$/m)
})

test("the image's idle proxy trims the C heap through koffi (the addon beside its bundle)", {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  await firstAnswer('hello-world-server')
  const top = (await docker(['top', hello.id, '-eo', 'pid,args'])).stdout
  const pid = /^(\d+)\s+\S*node .*\/mtc\/proxy\.mjs /m.exec(top)?.[1]
  assert.ok(pid != null, top)
  // The addon is loaded on the first idle release (start-up, or 30 s after the last one).
  await waitFor(
    'koffi.node mapped by the proxy',
    async () => (await readFile(`/proc/${pid}/maps`, 'utf8')).includes('/mtc/koffi.node'),
    { timeoutMs: 45_000, intervalMs: 500 },
  )
  const logs = await docker(['logs', hello.id])
  assert.doesNotMatch(logs.stderr, /without malloc_trim/)
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
  // The service runs as nobody, the proxy as its own user; neither is root.
  const top = (await docker(['top', hello.id, '-eo', 'pid,uid,args'])).stdout
  assert.match(top, /^\d+\s+65534\s+node \/app\/hello-world-server\.mjs$/m)
  assert.match(top, /^\d+\s+65533\s+\S*node .*\/mtc\/proxy\.mjs --psk-file \/dev\/shm\/mtc-proxy-/m)
  for (const file of ['/run/mtc/swarm.key', '/run/mtc/identity.key']) {
    const read = await docker(
      ['exec', '-u', '65534', hello.id, 'node', '-e', `require('fs').readFileSync('${file}')`],
      { allowFail: true },
    )
    assert.notEqual(read.code, 0)
    assert.match(read.stderr, /EACCES/)
  }
})

test('an image asking for root (MTC_SERVICE_USER=0) gets a service that cannot reach the key, while its proxy joins the mesh', {
  timeout: IMAGE_BUILD_TIMEOUT_MS + TEST_TIMEOUT_MS,
}, async () => {
  // The image: FROM mtc/base, MTC_SERVICE_USER=0, a setuid-root copy of node, and a
  // service that tries every way to the key (test/fixtures/key-thief.mjs).
  const ctx = join(dir.path, 'thief')
  await runToEnd('mkdir', ['-p', ctx])
  await copyFile(new URL('./fixtures/key-thief.mjs', import.meta.url), join(ctx, 'key-thief.mjs'))
  // COPY drops the setuid bit; ADD of a tarball keeps the modes it holds.
  await runToEnd('mkdir', ['-p', join(ctx, 'suid')])
  await copyFile(process.execPath, join(ctx, 'suid', 'suid-node'))
  await chmod(join(ctx, 'suid', 'suid-node'), 0o4755)
  const tar = await runToEnd('tar', [
    ...['--owner=0', '--group=0', '-C', join(ctx, 'suid'), '-cf', join(ctx, 'suid.tar')],
    'suid-node',
  ])
  assert.equal(tar.code, 0, tar.stderr)
  await rm(join(ctx, 'suid'), { recursive: true })
  await writeFile(
    join(ctx, 'Dockerfile'),
    [
      'FROM mtc/base:0.1.0',
      'ENV MTC_SERVICE_USER=0',
      'COPY key-thief.mjs /app/',
      'ADD suid.tar /app/',
      'CMD ["node", "/app/key-thief.mjs"]',
      '',
    ].join('\n'),
  )
  process.env.DOCKER_BUILDKIT = '0'
  await docker(['build', '-q', '-t', 'mtc-test/key-thief:1', ctx], {
    timeoutMs: IMAGE_BUILD_TIMEOUT_MS,
  })
  const mode = await docker([
    'run',
    '--rm',
    '--entrypoint',
    '/usr/local/bin/node',
    'mtc-test/key-thief:1',
    '-p',
    'fs.statSync("/app/suid-node").mode.toString(8)',
  ])
  assert.equal(mode.stdout.trim(), '104755', 'the image holds a setuid-root binary')

  const thief = await startInstance('mtc-test/key-thief:1', 'key-thief')
  const answer = await firstAnswer('key-thief') // through the overlay: the proxy joined the mesh
  const tries = JSON.parse(answer.body) as {
    what: string
    ok: boolean
    value?: string
    error?: string
  }[]
  const pskText = (await readFile(pskFile, 'utf8')).trim()
  const hex = pskText.split('\n').at(-1)!
  assert.ok(!answer.body.includes(hex), `the service got the PSK: ${answer.body}`)
  const identityHex = (await readFile(identityFile)).toString('hex')
  assert.ok(!answer.body.includes(identityHex.slice(0, 40)), 'the service got the identity key')

  assert.deepEqual(tries[0], { what: 'user', ok: true, value: '65534:65534' })
  const processes = tries.filter((t) => t.what.startsWith('process '))
  assert.ok(
    processes.some((t) => /\/mtc\/entrypoint\.mjs/.test(t.value!)),
    JSON.stringify(processes),
  )
  assert.ok(
    processes.some((t) => /\/mtc\/proxy\.mjs/.test(t.value!)),
    JSON.stringify(processes),
  )
  const attacks = tries.filter((t) => t.what !== 'user' && !t.what.startsWith('process '))
  for (const what of [
    'read /run/mtc/swarm.key',
    'read /run/mtc/identity.key',
    'setuid(0)',
    'setuid binary',
  ]) {
    assert.ok(
      attacks.some((t) => t.what === what),
      `${what} not tried`,
    )
  }
  assert.ok(attacks.some((t) => /^read \/dev\/shm\/mtc-proxy-\w+\/swarm\.key$/.test(t.what)))
  assert.ok(attacks.some((t) => /^open \/proc\/\d+\/mem$/.test(t.what)))
  const succeeded = attacks.filter((t) => t.ok)
  assert.deepEqual(succeeded, [], JSON.stringify(succeeded, null, 1))

  const logs = (await docker(['logs', thief.id])).stderr
  assert.match(
    logs,
    /mtc-entrypoint: MTC_SERVICE_USER="0" asks for root; the service runs as 65534:65534 instead/,
  )
  await docker(['rm', '-f', thief.id])
})

test('without no-new-privileges, or started as another user than root, the entrypoint refuses: one line, exit 2', {
  timeout: TEST_TIMEOUT_MS,
}, async () => {
  const env = ['-e', 'PROXY_PORT=4999', '-e', 'PROXY_IP=127.0.0.1', '-e', 'SERVICE_PORT=4998']
  env.push('-e', 'SERVICE_NAME=x', '-e', `P2P_BOOTSTRAPS=${bootstrap}`)
  const key = ['-v', `${pskFile}:/run/mtc/swarm.key:ro`]
  const base = ['run', '--rm', '--label', LABEL, '--network', 'host', ...env, ...key]
  const noNnp = await docker([...base, 'mtc/base:0.1.0', 'true'], { allowFail: true })
  assert.equal(noNnp.code, 2, noNnp.stderr)
  assert.match(
    noNnp.stderr,
    /^mtc-entrypoint: no_new_privs is off[^\n]*--security-opt no-new-privileges[^\n]*\n$/,
  )
  const user = await docker(
    [...base, ...NO_NEW_PRIVS, '--user', '1000', 'mtc/base:0.1.0', 'true'],
    {
      allowFail: true,
    },
  )
  assert.equal(user.code, 2, user.stderr)
  assert.match(user.stderr, /^mtc-entrypoint: the entrypoint runs as uid 1000, not root/)
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
      ...NO_NEW_PRIVS,
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
      ...NO_NEW_PRIVS,
      ...['-e', `PROXY_PORT=${await freePort()}`, '-e', 'PROXY_IP=127.0.0.1'],
      ...['-e', `SERVICE_PORT=${await freePort()}`, '-e', 'SERVICE_NAME=failing'],
      ...['-e', `P2P_BOOTSTRAPS=${bootstrap}`, '-v', `${pskFile}:/run/mtc/swarm.key:ro`],
      'mtc/base:0.1.0',
      // Fails once the proxy's gateway answers (its SIGTERM handler is in place by then;
      // a fixed delay lost that race on a loaded machine), or with 4 after 30 s.
      ...['node', '-e', FAIL_WHEN_PROXY_UP],
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
      ...NO_NEW_PRIVS,
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
