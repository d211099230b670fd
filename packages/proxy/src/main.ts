import { isServiceName } from '@mtc/hash-lookup/client'
import {
  type CommandSpec,
  DaemonFlags,
  type DaemonSpec,
  DEFAULT_LISTEN,
  type FlagValues,
  Lifecycle,
  MeshDaemon,
  NODE_ENV_HELP,
  NODE_FLAGS,
  parseCommandLine,
  parseDurationFlag,
  parsePortNumber,
  runDaemon,
  sendJson,
  UsageError,
} from '@mtc/p2pnode'
import type { Multiaddr } from '@multiformats/multiaddr'
import { Registry } from 'prom-client'
import {
  DEFAULT_ALLOCATION_TIMEOUT_MS,
  DEFAULT_HEADERS_TIMEOUT_MS,
  DEFAULT_HEALTH_INTERVAL_MS,
  DEFAULT_HEALTH_THRESHOLD,
  DEFAULT_METRICS,
  DEFAULT_UPSTREAM_TIMEOUT_MS,
} from './constants.ts'
import type { HealthSettings } from './health-check.ts'
import { startIdleMemoryRelease } from './idle-memory.ts'
import { MeshAllocator } from './mesh-allocator.ts'
import { MeshProxy } from './mesh-proxy.ts'
import { ProxyMetrics } from './metrics.ts'
import { RegistryRequirements } from './registry-requirements.ts'
import { type Requirements, readRequirementsFile } from './requirements.ts'

export const COMMAND: CommandSpec = {
  name: 'proxy',
  summary: 'HTTP gateway into the mesh; in service mode also the sidecar of an instance',
  usage: '[flags] PORT [SERVICE ADDRESS]',
  positionals: { min: 1, max: 3 },
  flags: {
    ...NODE_FLAGS,
    config: {
      type: 'string',
      arg: 'FILE',
      help: 'requirements {"Perf":{"SoftReq":{"RTT":ms},"HardReq":{"RTT":ms}}}',
    },
    'headers-timeout': {
      type: 'string',
      arg: 'DURATION',
      help: `a client must send its request head within this (default ${DEFAULT_HEADERS_TIMEOUT_MS / 1000}s)`,
    },
    'upstream-timeout': {
      type: 'string',
      arg: 'DURATION',
      help: `an instance must answer (response head) within this (default ${DEFAULT_UPSTREAM_TIMEOUT_MS / 1000}s)`,
    },
    'allocation-timeout': {
      type: 'string',
      arg: 'DURATION',
      help: `a request waits this long for an instance being started (default ${DEFAULT_ALLOCATION_TIMEOUT_MS / 1000}s)`,
    },
    'no-allocate': {
      type: 'boolean',
      help: 'never ask allocators for instances: use only the running ones',
    },
    hl: {
      type: 'string',
      arg: 'MULTIADDR',
      help: 'hl-service to read per-service requirements from (default: found in the DHT)',
    },
    'health-path': {
      type: 'string',
      arg: 'PATH',
      help: 'service mode: ready only while GET PATH answers 2xx (env HEALTH_PATH; default: TCP check)',
    },
    'health-interval': {
      type: 'string',
      arg: 'DURATION',
      help: `service mode: between health checks (env HEALTH_INTERVAL_MS; default ${DEFAULT_HEALTH_INTERVAL_MS / 1000}s)`,
    },
    'health-threshold': {
      type: 'string',
      arg: 'N',
      help: `service mode: failed checks in a row before not ready (env HEALTH_THRESHOLD; default ${DEFAULT_HEALTH_THRESHOLD})`,
    },
  },
  epilog: `Client mode (PORT): http://127.0.0.1:PORT/<service>/<path> is sent to the instance of
<service> with the lowest latency, as /<path>.
Service mode (PORT SERVICE ADDRESS, e.g. $PROXY_PORT hello $PROXY_IP:$SERVICE_PORT): the same
gateway, plus SERVICE is announced in the DHT and requests from the mesh go to ADDRESS.
When no instance qualifies (none, or all above the hard RTT limit) an allocator is asked
to start one and the request waits for it (--allocation-timeout); --no-allocate turns
this off. Per-service RTT limits come from the hash-lookup record (--hl, or an hl-service
found in the DHT), over --config's.
Metrics: --metrics, default ${DEFAULT_METRICS} in client mode; in service mode METRICS_PORT if
set, else none. /status (service mode) reports {service, idleSeconds, ready, imageId,
draining}. The allocator sets IMAGE_ID (reported as imageId) and ALLOCATOR_PEER_ID (the only
peer whose drain request is obeyed) in an instance's environment, and HEALTH_* from the record.

${NODE_ENV_HELP}
  METRICS_PORT     service mode: metrics port when --metrics is not given`,
}

interface ProxyArgs {
  port: number
  service?: { name: string; target: { host: string; port: number } }
}

/** PORT [SERVICE ADDRESS] → validated arguments (UsageError naming the bad one). */
export function parsePositionals(positionals: string[]): ProxyArgs {
  if (positionals.length === 2) {
    throw new UsageError(`ADDRESS missing after SERVICE (usage: proxy ${COMMAND.usage})`)
  }
  const port = parsePortNumber('PORT', positionals[0])
  if (positionals.length === 1) return { port }
  const name = positionals[1]
  if (!isServiceName(name)) {
    throw new UsageError(
      `SERVICE: "${name}" is not a service name (lower-case letters, digits, inner dashes)`,
    )
  }
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(positionals[2])
  if (m == null) throw new UsageError(`ADDRESS: "${positionals[2]}" is not HOST:PORT`)
  const target = { host: m[1] ?? m[2], port: parsePortNumber('ADDRESS', m[3]) }
  return { port, service: { name, target } }
}

/**
 * Service mode's health check from the flags, else the environment the allocator sets
 * (HEALTH_PATH, HEALTH_INTERVAL_MS, HEALTH_THRESHOLD: the registry record's); none without a path.
 */
export function healthSettings(
  values: Record<string, unknown>,
  env: NodeJS.ProcessEnv,
): HealthSettings | undefined {
  const flags = new DaemonFlags(values as FlagValues)
  const path = flags.string('health-path') ?? nonEmpty(env.HEALTH_PATH)
  if (path == null) return undefined
  if (!/^\/[\x21-\x7e]*$/.test(path) || path.length > 256) {
    throw new UsageError(`--health-path: "${path}" is not a path starting with / (no spaces)`)
  }
  const intervalFlag = flags.string('health-interval')
  const intervalEnv = nonEmpty(env.HEALTH_INTERVAL_MS)
  const intervalMs =
    intervalFlag != null
      ? parseDurationFlag('health-interval', intervalFlag)
      : intervalEnv != null
        ? parseDurationFlag('health-interval', `${intervalEnv}ms`)
        : undefined
  if (intervalMs != null && intervalMs < 100) {
    throw new UsageError('--health-interval: at least 100ms')
  }
  const thresholdText = flags.string('health-threshold') ?? nonEmpty(env.HEALTH_THRESHOLD)
  let threshold: number | undefined
  if (thresholdText != null) {
    threshold = Number(thresholdText)
    if (!/^\d+$/.test(thresholdText) || threshold < 1 || threshold > 100) {
      throw new UsageError(`--health-threshold: "${thresholdText}" is not a whole number 1-100`)
    }
  }
  return { path, intervalMs, threshold }
}

function nonEmpty(v: string | undefined): string | undefined {
  return v != null && v.trim() !== '' ? v.trim() : undefined
}

/** The proxy's own settings, validated and frozen before it starts. */
export interface ProxyConfig {
  readonly args: ProxyArgs
  readonly headersTimeoutMs: number | undefined
  readonly upstreamTimeoutMs: number | undefined
  readonly allocationTimeoutMs: number | undefined
  readonly allocate: boolean
  readonly hl: Multiaddr | undefined
  readonly configFile: string | undefined
  /** Service mode's health check (flags, else the allocator's environment). */
  readonly health: HealthSettings | undefined
}

export function proxyConfig(
  values: FlagValues,
  positionals: string[],
  env: NodeJS.ProcessEnv,
): ProxyConfig {
  const flags = new DaemonFlags(values)
  const args = parsePositionals(positionals)
  return Object.freeze({
    args,
    headersTimeoutMs: flags.duration('headers-timeout'),
    upstreamTimeoutMs: flags.duration('upstream-timeout'),
    allocationTimeoutMs: flags.duration('allocation-timeout'),
    allocate: !flags.boolean('no-allocate'),
    hl: flags.multiaddr('hl'),
    configFile: flags.string('config'),
    health: args.service != null ? healthSettings(values, env) : undefined,
  })
}

/** The daemon spec; the metrics default depends on the mode (see COMMAND's epilog). */
export function proxySpec(metricsDefault: string | undefined): DaemonSpec {
  return {
    command: COMMAND,
    role: 'proxy',
    nodeDefaults: { listen: [DEFAULT_LISTEN], metrics: metricsDefault },
    async start(ctx) {
      const config = proxyConfig(ctx.values, ctx.positionals, ctx.env)
      const { args, allocationTimeoutMs, headersTimeoutMs, upstreamTimeoutMs, hl } = config
      const requirements: Requirements =
        config.configFile != null ? await readRequirementsFile(config.configFile) : {}
      const life = new Lifecycle(ctx.log.error)
      return await life.starting(async () => {
        const registry = new Registry()
        let proxy: MeshProxy | undefined
        const mesh = await MeshDaemon.start(ctx, {
          role: 'proxy',
          registry,
          routes:
            args.service != null
              ? { '/status': (_req, res) => sendJson(res, proxy?.status() ?? {}) }
              : undefined,
        })
        life.defer('mesh', () => mesh.stop())
        life.defer(
          'idle memory',
          startIdleMemoryRelease({ log: ctx.log, quietMs: () => proxy?.quietMs() ?? 0 }),
        )
        const libp2p = mesh.node.libp2p
        const metrics = new ProxyMetrics(registry)
        proxy = new MeshProxy({
          libp2p,
          registry,
          metrics,
          logger: ctx.logger,
          port: args.port,
          service:
            args.service != null
              ? {
                  ...args.service,
                  health: config.health,
                  imageId: nonEmpty(ctx.env.IMAGE_ID),
                  drainFrom: nonEmpty(ctx.env.ALLOCATOR_PEER_ID),
                }
              : undefined,
          requirements,
          requirementsSource: new RegistryRequirements({
            libp2p,
            log: ctx.logger.forComponent('mtc:proxy:requirements'),
            metrics,
            hl,
          }),
          allocator: config.allocate
            ? new MeshAllocator({ libp2p, log: ctx.logger.forComponent('mtc:proxy:allocator') })
            : undefined,
          allocationTimeoutMs,
          headersTimeoutMs,
          upstreamTimeoutMs,
        })
        const started = proxy
        try {
          await started.start()
        } catch (err) {
          throw new Error(
            `cannot start the gateway on port ${args.port}: ${(err as Error).message}`,
          )
        }
        life.defer('gateway', () => started.stop())
        ctx.log(
          'gateway on http://127.0.0.1:%d/<service>/%s',
          proxy.gateway.port(),
          args.service != null
            ? `; serving ${args.service.name} from ${args.service.target.host}:${args.service.target.port}`
            : '',
        )
        return { stop: () => life.stop() }
      })
    },
  }
}

export async function main(argv: string[], env = process.env): Promise<number> {
  let metricsDefault: string | undefined = DEFAULT_METRICS
  try {
    const parsed = parseCommandLine(COMMAND, argv)
    if (parsed.kind === 'run' && parsed.positionals.length === 3) {
      const port = env.METRICS_PORT
      metricsDefault =
        port != null && port !== '' ? `0.0.0.0:${parsePortNumber('METRICS_PORT', port)}` : undefined
    }
  } catch (err) {
    // Bad command lines are reported by runDaemon; only METRICS_PORT is ours.
    if (err instanceof UsageError && err.message.startsWith('METRICS_PORT')) {
      process.stderr.write(`proxy: ${err.message}\n`)
      return 2
    }
  }
  return await runDaemon(proxySpec(metricsDefault), argv, env)
}
