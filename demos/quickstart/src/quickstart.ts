import { type ChildProcess, execFile, spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs, promisify } from 'node:util'
import { exitWith, formatSwarmKey, generatePsk } from '@mtc/p2pnode'

/**
 * The one-machine quickstart: a bootstrap (ping-monitor), the registry (hl-service with
 * its own etcd), an allocator on the local Docker, and a client proxy on :4200; then
 * hello-world-server is built, registered, and called through the proxy, which gets an
 * instance started on demand.
 */
const ROOT = resolve(import.meta.dirname, '../../../..')
const BIN = join(ROOT, 'node_modules', '.bin')
const exec = promisify(execFile)
const PORTS = {
  bootstrap: 4001,
  pingMonitor: 9100,
  allocator: 9101,
  hl: 9102,
  proxy: 9103,
  gateway: 4200,
}
const SERVICE = 'hello-world-server'
const IMAGE = 'mtc/hello-world-server:1.0'
/** Start-up of each daemon, and the first (cold) request, are bounded. */
const DAEMON_START_TIMEOUT_MS = 30_000
const FIRST_REQUEST_TIMEOUT_MS = 90_000
/** A daemon stops within its own 10 s shutdown bound; then it is killed. */
const DAEMON_STOP_TIMEOUT_MS = 12_000
/** The label that marks the containers of one allocator (its data directory's ID). */
const OWNER_LABEL = 'mtc.owner'

const say = (s: string): void => {
  process.stdout.write(`${s}\n`)
}

async function main(): Promise<number> {
  let once = false
  try {
    const { values } = parseArgs({
      options: { once: { type: 'boolean' }, help: { type: 'boolean' } },
      strict: true,
    })
    if (values.help === true) {
      say(
        'Usage: scripts/demo.sh [--once]\n  --once  run the scenario, print the result and exit (0 on success)',
      )
      return 0
    }
    once = values.once === true
  } catch (err) {
    process.stderr.write(`quickstart: ${(err as Error).message}\n`)
    return 2
  }

  const dir = await mkdtemp(join(tmpdir(), 'mtc-quickstart-'))
  const children: Array<{ name: string; child: ChildProcess }> = []
  /** The ID on the containers of the demo's allocator, once it runs. */
  let owner: string | undefined
  let interrupted = false
  const onSignal = (): void => {
    interrupted = true
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)

  const start = (name: string, bin: string, args: string[]): void => {
    const child = spawn(join(BIN, bin), args, { stdio: ['ignore', 'ignore', 'pipe'] })
    child.stderr?.setEncoding('utf8').on('data', (d: string) => {
      for (const line of d.trimEnd().split('\n')) process.stderr.write(`  [${name}] ${line}\n`)
    })
    children.push({ name, child })
  }
  const addr = async (file: string, what: string): Promise<string> =>
    await waitFor(
      what,
      DAEMON_START_TIMEOUT_MS,
      async () => (await readFile(file, 'utf8').catch(() => '')).split('\n')[0] || undefined,
    )
  const waitFor = async <T>(
    what: string,
    ms: number,
    check: () => Promise<T | undefined>,
  ): Promise<T> => {
    const deadline = Date.now() + ms
    while (Date.now() < deadline && !interrupted) {
      const v = await check().catch(() => undefined)
      if (v !== undefined) return v
      await sleep(200)
    }
    throw new Error(interrupted ? 'interrupted' : `timed out waiting for ${what}`)
  }

  const scenario = async (): Promise<number> => {
    await exec('docker', ['info']).catch(() => {
      throw new Error('Docker is not running (scripts/dockerd.sh starts it)')
    })
    const psk = join(dir, 'swarm.key')
    await writeFile(psk, formatSwarmKey(generatePsk()), { mode: 0o600 })
    const common = ['--psk-file', psk]
    // Each daemon keeps its identity across a restart: an allocator restarted by hand
    // still finds its instances (it would anyway: they are its data directory's).
    const key = (name: string): string[] => ['--key-file', join(dir, `${name}.key`)]

    say('1. bootstrap: ping-monitor on :4001 (metrics :9100)')
    start('ping-monitor', 'ping-monitor', [
      ...common,
      ...key('ping-monitor'),
      '--listen',
      `/ip4/127.0.0.1/tcp/${PORTS.bootstrap}`,
      '--metrics',
      `127.0.0.1:${PORTS.pingMonitor}`,
      '--addr-file',
      join(dir, 'pm.addr'),
    ])
    const bootstrap = await addr(join(dir, 'pm.addr'), 'the bootstrap')
    const joined = [...common, '--bootstrap', bootstrap, '--listen', '/ip4/127.0.0.1/tcp/0']

    say('2. registry: hl-service with a local etcd (metrics :9102)')
    start('hl-service', 'hl-service', [
      ...joined,
      ...key('hl-service'),
      '--new-etcd-cluster',
      '--data-dir',
      join(dir, 'hl'),
      '--metrics',
      `127.0.0.1:${PORTS.hl}`,
      '--addr-file',
      join(dir, 'hl.addr'),
    ])
    const hl = await addr(join(dir, 'hl.addr'), 'hl-service')

    say('3. allocator on the local Docker (metrics :9101)')
    start('allocator', 'allocator', [
      ...joined,
      ...key('allocator'),
      '--host-ip',
      '127.0.0.1',
      '--data-dir',
      join(dir, 'allocator'),
      '--metrics',
      `127.0.0.1:${PORTS.allocator}`,
      '--addr-file',
      join(dir, 'alloc.addr'),
    ])
    await addr(join(dir, 'alloc.addr'), 'the allocator')
    owner = (await readFile(join(dir, 'allocator', 'allocator-id'), 'utf8')).trim()

    say('4. client proxy on :4200 (metrics :9103)')
    start('proxy', 'proxy', [
      ...joined,
      ...key('proxy'),
      '--metrics',
      `127.0.0.1:${PORTS.proxy}`,
      String(PORTS.gateway),
    ])

    say(`5. building ${IMAGE} and registering it as ${SERVICE}`)
    await exec('bash', [join(ROOT, 'scripts/build-images.sh'), '--save', dir], {
      maxBuffer: 16 << 20,
    })
    await exec(join(BIN, 'hl-cli'), [
      ...common,
      '--hl',
      hl,
      'add',
      '--file',
      join(dir, `${SERVICE}.tar`),
      IMAGE,
      SERVICE,
    ])

    say(
      `6. curl localhost:${PORTS.gateway}/${SERVICE}/  (no instance runs yet: one is started on demand)`,
    )
    await waitFor(
      'the gateway',
      DAEMON_START_TIMEOUT_MS,
      async () => await fetch(`http://127.0.0.1:${PORTS.gateway}/`).then(() => true),
    )
    const t0 = performance.now()
    const res = await fetch(`http://127.0.0.1:${PORTS.gateway}/${SERVICE}/`, {
      signal: AbortSignal.timeout(FIRST_REQUEST_TIMEOUT_MS),
    })
    const body = await res.text()
    const coldMs = performance.now() - t0
    if (res.status !== 200 || !/Hello, world/.test(body)) {
      throw new Error(`the first request answered ${res.status}: ${body.trim()}`)
    }
    say(`   -> ${res.status} "${body.trim()}" in ${coldMs.toFixed(0)} ms (cold start)`)
    const t1 = performance.now()
    const warm = await fetch(`http://127.0.0.1:${PORTS.gateway}/${SERVICE}/`)
    await warm.text()
    say(`   -> ${warm.status} again in ${(performance.now() - t1).toFixed(1)} ms (warm)`)
    const ps = await exec('docker', [
      'ps',
      '--filter',
      `label=${OWNER_LABEL}=${owner}`,
      '--format',
      '{{.Names}}  {{.Image}}  {{.Status}}',
    ])
    say(`   instance container: ${ps.stdout.trim()}`)
    const look: Array<[string, string]> = [
      [`curl localhost:${PORTS.gateway}/${SERVICE}/`, 'the service through the mesh'],
      [`curl -s localhost:${PORTS.pingMonitor}/peers`, 'RTT table of the bootstrap'],
      [
        `curl -s localhost:${PORTS.allocator}/metrics | grep mtc_allocator`,
        'allocations and cold starts',
      ],
      [`curl -s localhost:${PORTS.proxy}/metrics | grep mtc_proxy`, 'requests through the gateway'],
      [`curl -s localhost:${PORTS.hl}/metrics | grep mtc_hl`, 'registry requests'],
      [`docker ps --filter label=${OWNER_LABEL}=${owner}`, 'instances started on demand'],
      [`pnpm exec hl-cli --psk-file ${psk} --hl ${hl} list`, 'registered services'],
    ]
    say('\nWhere to look:')
    for (const [cmd, what] of look) say(`  ${cmd.padEnd(58)}  ${what}`)
    if (once) return 0
    say('\nRunning; Ctrl-C stops everything.')
    while (!interrupted) await sleep(500)
    return 0
  }

  const code = await scenario().catch((err: Error) => {
    process.stderr.write(`quickstart: ${err.message}\n`)
    return 1
  })
  const left = await cleanUp(children, owner)
  await rm(dir, { recursive: true, force: true }).catch((err: Error) => {
    left.push(`${dir}: ${err.message}`)
  })
  if (left.length === 0) {
    say('stopped everything the demo started')
    return code
  }
  for (const what of left) process.stderr.write(`quickstart: left behind: ${what}\n`)
  return code === 0 ? 1 : code
}

/**
 * Stops the daemons (clients first, the bootstrap last; SIGKILL after
 * DAEMON_STOP_TIMEOUT_MS), then removes the instances the allocator left running, and
 * checks that they are gone. Returns what could not be stopped or removed.
 */
async function cleanUp(
  children: Array<{ name: string; child: ChildProcess }>,
  owner: string | undefined,
): Promise<string[]> {
  const left: string[] = []
  for (const { name, child } of [...children].reverse()) {
    if (child.exitCode != null || child.signalCode != null) continue
    const closed = new Promise((ok) => child.once('close', ok))
    child.kill('SIGTERM')
    const stopped = await Promise.race([closed.then(() => true), sleep(DAEMON_STOP_TIMEOUT_MS)])
    if (stopped !== true) {
      child.kill('SIGKILL')
      if ((await Promise.race([closed.then(() => true), sleep(2_000)])) !== true) {
        left.push(`${name} (pid ${child.pid}) does not exit`)
      }
    }
  }
  if (owner == null) return left
  const containers = async (): Promise<string[]> =>
    (await exec('docker', ['ps', '-aq', '--filter', `label=${OWNER_LABEL}=${owner}`])).stdout
      .split('\n')
      .filter((id) => id !== '')
  try {
    const ids = await containers()
    if (ids.length > 0) await exec('docker', ['rm', '-f', '-v', ...ids])
    const still = await containers()
    if (still.length > 0) left.push(`containers ${still.join(' ')}`)
  } catch (err) {
    left.push(`the instances (label ${OWNER_LABEL}=${owner}): ${(err as Error).message}`)
  }
  return left
}

exitWith(await main())
