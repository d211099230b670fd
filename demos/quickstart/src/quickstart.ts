import { execFile } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs, promisify } from 'node:util'
import { exitWith, formatSwarmKey, generatePsk } from '@mtc/p2pnode'
import { type DaemonKind, Launcher, type Place, run } from '@mtc/testkit'

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
  const launcher = new Launcher()
  /** The ID on the containers of the demo's allocator, once it runs. */
  let owner: string | undefined
  let interrupted = false
  const onSignal = (): void => {
    interrupted = true
  }
  // `on`, not `once`: the daemons' reaper (testkit) also hears the signal, and lets this
  // process die of it only when nobody else listens; the clean-up below must run first.
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)

  /** Every line a daemon logs, shown with its name. */
  const place = (name: string): Place => ({
    spawn: (bin, args) => {
      // Shown as it comes; only a tail is kept (the demo may run for days).
      const proc = run(bin, args, { keepOutput: 64 * 1024 })
      proc.child.stderr?.on('data', (d: string) => {
        for (const line of d.trimEnd().split('\n')) process.stderr.write(`  [${name}] ${line}\n`)
      })
      return proc
    },
    httpGet: async (url, timeoutMs) => {
      const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
      return { status: res.status, body: await res.text() }
    },
  })
  /** Starts a daemon and waits until it is ready; resolves with its first multiaddr. */
  const start = async (
    kind: DaemonKind,
    name: string,
    metricsPort: number,
    args: string[],
    gateway?: number,
  ): Promise<string> => {
    const addrFile = join(dir, `${name}.addr`)
    const metrics = `127.0.0.1:${metricsPort}`
    const d = await launcher.start({
      kind,
      args: [...args, '--metrics', metrics, '--addr-file', addrFile],
      addrFile,
      metrics,
      gateway,
      place: place(name),
      name,
      timeoutMs: DAEMON_START_TIMEOUT_MS,
    })
    return d.addr
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
    const bootstrap = await start('bootstrap', 'ping-monitor', PORTS.pingMonitor, [
      ...common,
      ...key('ping-monitor'),
      '--listen',
      `/ip4/127.0.0.1/tcp/${PORTS.bootstrap}`,
    ])
    const joined = [...common, '--bootstrap', bootstrap, '--listen', '/ip4/127.0.0.1/tcp/0']

    say('2. registry: hl-service with a local etcd (metrics :9102)')
    const hl = await start('hl-service', 'hl-service', PORTS.hl, [
      ...joined,
      ...key('hl-service'),
      '--new-etcd-cluster',
      '--data-dir',
      join(dir, 'hl'),
    ])

    say('3. allocator on the local Docker (metrics :9101)')
    await start('allocator', 'allocator', PORTS.allocator, [
      ...joined,
      ...key('allocator'),
      '--host-ip',
      '127.0.0.1',
      '--data-dir',
      join(dir, 'allocator'),
    ])
    owner = (await readFile(join(dir, 'allocator', 'allocator-id'), 'utf8')).trim()

    say('4. client proxy on :4200 (metrics :9103)')
    await start(
      'proxy',
      'proxy',
      PORTS.proxy,
      [...joined, ...key('proxy'), String(PORTS.gateway)],
      PORTS.gateway,
    )

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
  const left = await cleanUp(launcher, owner)
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
 * Stops the daemons (clients first, the bootstrap last; SIGKILL after their graceful-stop
 * time), then removes the instances the allocator left running, and checks that they are
 * gone. Returns what could not be stopped or removed.
 */
async function cleanUp(launcher: Launcher, owner: string | undefined): Promise<string[]> {
  const left: string[] = []
  await launcher.stop()
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
