import { mkdir, readdir, readFile, stat } from 'node:fs/promises'
import { networkInterfaces } from 'node:os'
import { join, resolve } from 'node:path'
import type { PeerId } from '@libp2p/interface'
import { BlobStore, serveBlobs } from '@mtc/blobs'
import {
  Announcer,
  type CommandSpec,
  type Daemon,
  type DaemonContext,
  DaemonFlags,
  type DaemonSpec,
  type FlagValues,
  formatSwarmKey,
  Lifecycle,
  MeshDaemon,
  NODE_ENV_HELP,
  NODE_FLAGS,
  queryStatus,
  requestDrain,
  runDaemon,
  UsageError,
  writeFileAtomic,
} from '@mtc/p2pnode'
import type { Multiaddr } from '@multiformats/multiaddr'
import Dockerode from 'dockerode'
import { Registry } from 'prom-client'
import {
  DEFAULT_DRAIN_TIMEOUT_MS,
  DEFAULT_IDLE_TIMEOUT_MS,
  DEFAULT_MAX_INSTANCES,
  DEFAULT_PORT_RANGE,
  DEFAULT_START_TIMEOUT_MS,
  PORTS_PER_INSTANCE,
  REAP_INTERVAL_MS,
} from '../constants.ts'
import { ImageProvider } from './image-provider.ts'
import { InstanceManager } from './instances.ts'
import { AllocatorMetrics } from './metrics.ts'
import { MinInstancesKeeper } from './min-instances.ts'
import { loadOrCreateOwnerId } from './owner-id.ts'
import { PortPool } from './port-pool.ts'
import { RegistryAccess } from './registry.ts'
import { RolloutDriver } from './rollout.ts'
import { DockerRuntime } from './runtime.ts'
import { AllocatorServer } from './server.ts'

const DEFAULT_METRICS = '0.0.0.0:9101'
const DEFAULT_DATA_DIR = 'allocator-data'

export const COMMAND: CommandSpec = {
  name: 'allocator',
  summary: 'starts service instances in Docker on demand (one per host)',
  usage: '[flags]',
  flags: {
    ...NODE_FLAGS,
    'host-ip': {
      type: 'string',
      arg: 'IP',
      help: 'address instances listen on and are reached at (default: first non-loopback IPv4)',
    },
    'port-range': {
      type: 'string',
      arg: 'FIRST-LAST',
      help: `ports handed to instances, ${PORTS_PER_INSTANCE} each (default ${DEFAULT_PORT_RANGE.first}-${DEFAULT_PORT_RANGE.last})`,
    },
    'max-instances': {
      type: 'string',
      arg: 'N',
      help: `instances this host runs at most (default ${DEFAULT_MAX_INSTANCES})`,
    },
    'idle-timeout': {
      type: 'string',
      arg: 'DURATION',
      help: 'stop instances idle this long (default 10m)',
    },
    'start-timeout': {
      type: 'string',
      arg: 'DURATION',
      help: 'an instance not ready by then has failed (default 30s)',
    },
    'drain-timeout': {
      type: 'string',
      arg: 'DURATION',
      help: 'a replaced instance gets this long to finish its requests (default 30s)',
    },
    'docker-socket': {
      type: 'string',
      arg: 'PATH',
      help: 'Docker Engine socket (default: DOCKER_HOST, else /var/run/docker.sock)',
    },
    hl: {
      type: 'string',
      arg: 'MULTIADDR',
      help: 'use this hl-service (default: find one through the DHT)',
    },
    'data-dir': {
      type: 'string',
      arg: 'PATH',
      help: `image tarballs and instance keys (default ./${DEFAULT_DATA_DIR})`,
    },
  },
  epilog: `Defaults: --listen /ip4/0.0.0.0/tcp/0 --metrics ${DEFAULT_METRICS}
Metrics at /metrics (mtc_allocator_*), liveness at /healthz.

${NODE_ENV_HELP}
  DOCKER_HOST      Docker Engine address, when --docker-socket is not given`,
}

function parseRange(value: string): { first: number; last: number } {
  const m = /^(\d+)-(\d+)$/.exec(value)
  const first = Number(m?.[1])
  const last = Number(m?.[2])
  if (m == null || first < 1024 || last > 65535 || last - first + 1 < PORTS_PER_INSTANCE) {
    throw new UsageError(
      `--port-range: "${value}" is not FIRST-LAST within 1024-65535 (at least ${PORTS_PER_INSTANCE} ports)`,
    )
  }
  return { first, last }
}

function parseCount(flag: string, value: string): number {
  const n = Number(value)
  if (!/^\d+$/.test(value) || n < 1)
    throw new UsageError(`--${flag}: "${value}" is not a positive whole number`)
  return n
}

/**
 * The kernel's ephemeral port range: ports in it can be taken at any moment by outgoing
 * connections and by listeners on port 0, so a managed range should stay out of it.
 */
async function ephemeralRange(): Promise<{ first: number; last: number } | undefined> {
  const text = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').catch(() => '')
  const [first, last] = text.trim().split(/\s+/).map(Number)
  return Number.isFinite(first) && Number.isFinite(last) ? { first, last } : undefined
}

/** The host's first non-internal IPv4 address, else loopback. */
function defaultHostIp(): string {
  for (const addrs of Object.values(networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === 'IPv4' && !a.internal) return a.address
  }
  return '127.0.0.1'
}

async function dirBytes(dir: string): Promise<number> {
  const names = await readdir(dir).catch(() => [] as string[])
  let total = 0
  for (const n of names) total += (await stat(join(dir, n)).catch(() => ({ size: 0 }))).size
  return total
}

/** The allocator's own settings, validated and frozen before it starts. */
export interface AllocatorConfig {
  readonly hostIp: string
  readonly range: { readonly first: number; readonly last: number }
  readonly maxInstances: number
  readonly idleTimeoutMs: number
  readonly startTimeoutMs: number
  readonly drainTimeoutMs: number
  readonly hl: Multiaddr | undefined
  readonly dataDir: string
  readonly dockerSocket: string | undefined
}

export function allocatorConfig(values: FlagValues): AllocatorConfig {
  const flags = new DaemonFlags(values)
  const hostIp = flags.string('host-ip') ?? defaultHostIp()
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(hostIp))
    throw new UsageError(`--host-ip: "${hostIp}" is not an IPv4 address`)
  return Object.freeze({
    hostIp,
    range: Object.freeze(flags.parse('port-range', parseRange) ?? DEFAULT_PORT_RANGE),
    maxInstances:
      flags.parse('max-instances', (v) => parseCount('max-instances', v)) ?? DEFAULT_MAX_INSTANCES,
    idleTimeoutMs: flags.duration('idle-timeout') ?? DEFAULT_IDLE_TIMEOUT_MS,
    startTimeoutMs: flags.duration('start-timeout') ?? DEFAULT_START_TIMEOUT_MS,
    drainTimeoutMs: flags.duration('drain-timeout') ?? DEFAULT_DRAIN_TIMEOUT_MS,
    hl: flags.multiaddr('hl'),
    dataDir: resolve(flags.string('data-dir') ?? DEFAULT_DATA_DIR),
    dockerSocket: flags.string('docker-socket'),
  })
}

export const ALLOCATOR: DaemonSpec = {
  command: COMMAND,
  role: 'allocator',
  nodeDefaults: { listen: ['/ip4/0.0.0.0/tcp/0'], metrics: DEFAULT_METRICS },
  async start(ctx) {
    const config = allocatorConfig(ctx.values)
    const life = new Lifecycle(ctx.log.error)
    return await life.starting(() => startAllocator(ctx, config, life))
  },
}

/** Starts the allocator's parts, each registered with `life` to be stopped in reverse. */
async function startAllocator(
  ctx: DaemonContext,
  config: AllocatorConfig,
  life: Lifecycle,
): Promise<Daemon> {
  const { hostIp, range, maxInstances, idleTimeoutMs, startTimeoutMs, drainTimeoutMs } = config
  const { hl, dataDir } = config
  const socket = config.dockerSocket
  const eph = await ephemeralRange()
  if (eph != null && range.first <= eph.last && range.last >= eph.first) {
    ctx.log.error(
      'warning: --port-range %d-%d overlaps the ephemeral ports %d-%d; instances may fail to bind',
      range.first,
      range.last,
      eph.first,
      eph.last,
    )
  }
  const docker = new Dockerode(socket != null ? { socketPath: socket } : undefined)
  try {
    await docker.ping()
  } catch (err) {
    throw new Error(
      `cannot reach Docker${socket != null ? ` at ${socket}` : ''}: ${(err as Error).message}`,
    )
  }

  await mkdir(join(dataDir, 'instances'), { recursive: true, mode: 0o700 })
  const owner = await loadOrCreateOwnerId(dataDir)
  // Instances get the mesh key as a read-only file, never through their environment.
  const pskFile = ctx.config.psk != null ? join(dataDir, 'swarm.key') : undefined
  if (pskFile != null && ctx.config.psk != null)
    await writeFileAtomic(pskFile, formatSwarmKey(ctx.config.psk), 0o600)
  const blobs = new BlobStore({ dataDir })
  await blobs.start()

  const registry = new Registry()
  let manager: InstanceManager | undefined
  let rollouts: RolloutDriver | undefined
  const metrics = new AllocatorMetrics(registry, {
    running: () => manager?.runningCount ?? 0,
    starting: () => manager?.startingCount ?? 0,
    cacheBytes: () => dirBytes(join(dataDir, 'blobs', 'sha256')),
    services: () => manager?.serviceCounts() ?? {},
    instances: () => [...(manager?.services() ?? [])].flatMap((s) => manager?.instancesOf(s) ?? []),
    rolloutStates: () => rollouts?.states() ?? [],
  })
  const mesh = await MeshDaemon.start(ctx, { role: 'allocator', registry })
  life.defer('mesh', () => mesh.stop())
  const libp2p = mesh.node.libp2p
  const announcer = new Announcer(libp2p, ctx.logger.forComponent('mtc:allocator:announce'))
  const registryAccess = new RegistryAccess(
    libp2p,
    hl,
    ctx.logger.forComponent('mtc:allocator:registry'),
  )
  registryAccess.start()
  life.defer('registry access', () => registryAccess.stop())
  const runtime = new DockerRuntime(docker)
  const ports = new PortPool(range, hostIp)
  const images = new ImageProvider({
    runtime,
    libp2p,
    blobs,
    announcer,
    registryPeer: () => registryAccess.peer(AbortSignal.timeout(5_000)),
    log: ctx.logger.forComponent('mtc:allocator:images'),
  })
  const probe = {
    status: (peer: PeerId, signal: AbortSignal) => queryStatus(libp2p, peer, { signal }),
    drain: (peer: PeerId, signal: AbortSignal) => requestDrain(libp2p, peer, { signal }),
  }
  manager = new InstanceManager(
    {
      runtime,
      ports,
      images,
      probe,
      libp2p,
      metrics,
      lookup: (service, signal) => registryAccess.get(service, signal),
      mayReap: (service, signal) => keeper?.mayReap(service, signal) ?? Promise.resolve(true),
      log: ctx.log,
    },
    {
      owner,
      peerId: mesh.node.peerId.toString(),
      hostIp,
      bootstraps:
        ctx.config.bootstraps.length > 0
          ? ctx.config.bootstraps.map((b) => b.toString())
          : mesh.node.multiaddrs(),
      pskFile,
      stateDir: join(dataDir, 'instances'),
      maxInstances,
      idleTimeoutMs,
      startTimeoutMs,
      drainTimeoutMs,
    },
  )
  const keeper = new MinInstancesKeeper({
    libp2p,
    manager,
    metrics,
    registryPeer: (signal) => registryAccess.peer(signal),
    lookup: (service, signal) => registryAccess.get(service, signal),
    log: ctx.logger.forComponent('mtc:allocator:min-instances'),
  })
  rollouts = new RolloutDriver({
    manager,
    probe,
    lookup: (service, signal) => registryAccess.get(service, signal),
    metrics,
    log: ctx.logger.forComponent('mtc:allocator:rollout'),
  })
  // Before adopting: an instance that dies meanwhile is noticed either way.
  const watched = manager
  life.task('watching Docker events', (signal) => watched.watch(signal))
  const adopted = await manager.adopt()
  if (adopted > 0) ctx.log('re-adopted %d running instance(s)', adopted)
  const driver = rollouts
  const server = new AllocatorServer({
    libp2p,
    manager,
    metrics,
    maxInstances,
    log: ctx.log,
    report: (service) => driver.report(service),
  })
  await server.start()
  life.defer('allocation server', () => server.stop())
  await serveBlobs(libp2p, blobs)
  for (const digest of await blobs.list()) announcer.add('blob', digest)
  announcer.add('allocator')
  announcer.start()
  life.defer('announcer', () => announcer.stop())

  const m = manager
  life.loop('reaping', REAP_INTERVAL_MS, (signal) => m.reap(signal))
  life.task('min instances', (signal) => keeper.run(signal))
  life.task('rollouts', (signal) => driver.run(signal))
  ctx.log(
    'allocating on %s, ports %d-%d, at most %d instances',
    hostIp,
    range.first,
    range.last,
    maxInstances,
  )
  // Instances keep running after stop: a restarted allocator re-adopts them.
  return { stop: () => life.stop() }
}

export async function main(argv: string[], env = process.env): Promise<number> {
  return await runDaemon(ALLOCATOR, argv, env)
}
