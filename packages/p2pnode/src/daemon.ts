import type { ComponentLogger, Logger } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'
import type { Registry } from 'prom-client'
import { writeFileAtomic } from './atomic-file.ts'
import { MTC_VERSION, SHUTDOWN_TIMEOUT_MS } from './constants.ts'
import { UsageError } from './errors.ts'
import { type CommandSpec, type FlagValues, helpText, parseCommandLine } from './flags.ts'
import { Lifecycle } from './lifecycle.ts'
import { configureLogging } from './logging.ts'
import { advertisedMetricsHost, serveMetricsInfo } from './metrics-info.ts'
import { MetricsServer, type RouteHandler } from './metrics-server.ts'
import { MeshNode } from './node.ts'
import { type NodeConfig, type NodeDefaults, resolveNodeConfig } from './node-config.ts'

/** A started daemon; stop() finishes or fails in-flight work and releases everything. */
export interface Daemon {
  stop(): Promise<void>
}

export interface DaemonContext {
  values: FlagValues
  positionals: string[]
  env: NodeJS.ProcessEnv
  config: NodeConfig
  logger: ComponentLogger
  log: Logger
  /**
   * Aborted when SIGINT/SIGTERM arrives, before the daemon's own stop begins (which may
   * drain for seconds first): /healthz answers 503 from then on.
   */
  stopping?: AbortSignal
  /**
   * Set by MeshDaemon.start: the mesh node's addresses. runDaemon writes them to
   * --addr-file once the daemon's start has returned, so whoever waits for the file finds
   * every protocol handler registered (not an unsupported-protocol error).
   */
  multiaddrs?: () => string[]
}

export interface DaemonSpec {
  command: CommandSpec
  role: string
  nodeDefaults: NodeDefaults
  /** Validates the daemon's own flags (throwing UsageError) and starts it. */
  start(ctx: DaemonContext): Promise<Daemon>
}

export interface IO {
  stdout: (text: string) => void
  stderr: (text: string) => void
  /** Resolves on the first SIGINT/SIGTERM; injectable for tests. */
  signal?: Promise<string>
}

const defaultIO: IO = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
}

/**
 * The whole life of a daemon: parse and validate (exit 2 on bad input), start, wait for
 * SIGINT/SIGTERM, stop gracefully within SHUTDOWN_TIMEOUT_MS. Returns the exit code.
 */
export async function runDaemon(
  spec: DaemonSpec,
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
  io: IO = defaultIO,
): Promise<number> {
  const name = spec.command.name
  const stopping = new AbortController()
  let ctx: DaemonContext
  try {
    const parsed = parseCommandLine(spec.command, argv)
    if (parsed.kind === 'help') {
      io.stdout(helpText(spec.command, MTC_VERSION))
      return 0
    }
    if (parsed.kind === 'version') {
      io.stdout(`${name} ${MTC_VERSION}\n`)
      return 0
    }
    const config = await resolveNodeConfig(parsed.values, env, spec.nodeDefaults)
    configureLogging(config.logLevel, env.DEBUG)
    const logger = defaultLogger()
    ctx = {
      values: parsed.values,
      positionals: parsed.positionals,
      env,
      config,
      logger,
      log: logger.forComponent(`mtc:${spec.role}`),
      stopping: stopping.signal,
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`${name}: ${err.message}\n`)
      return 2
    }
    throw err
  }

  const signal = io.signal ?? waitForSignal()
  let daemon: Daemon
  try {
    daemon = await spec.start(ctx)
  } catch (err) {
    io.stderr(`${name}: ${(err as Error).message}\n`)
    return err instanceof UsageError ? 2 : 1
  }
  if (ctx.config.addrFile != null && ctx.multiaddrs != null) {
    try {
      await writeFileAtomic(ctx.config.addrFile, `${ctx.multiaddrs().join('\n')}\n`)
    } catch (err) {
      io.stderr(`${name}: ${(err as Error).message}\n`)
      await daemon.stop()
      return 1
    }
  }
  const received = await signal
  stopping.abort()
  ctx.log('%s received, stopping', received)
  const timeout = setTimeout(() => {
    io.stderr(`${name}: did not stop within ${SHUTDOWN_TIMEOUT_MS} ms, exiting\n`)
    process.exit(1)
  }, SHUTDOWN_TIMEOUT_MS)
  timeout.unref()
  try {
    await daemon.stop()
  } finally {
    clearTimeout(timeout)
  }
  return 0
}

/** First SIGINT/SIGTERM; a second one exits at once (the operator insists). */
function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const onSignal = (sig: string): void => {
      process.on('SIGINT', () => process.exit(130))
      process.on('SIGTERM', () => process.exit(143))
      resolve(sig)
    }
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
  })
}

export interface MeshDaemonInit {
  role: string
  /** Extra GET routes on the metrics server, e.g. `/peers`. */
  routes?: Record<string, RouteHandler>
  /** Registry shared with the daemon's own metrics. */
  registry?: Registry
  dhtClient?: boolean
}

/** The mesh node and metrics server of a daemon, started together and stopped in reverse. */
export class MeshDaemon implements Daemon {
  readonly node: MeshNode
  readonly metrics?: MetricsServer
  private readonly life: Lifecycle

  private constructor(node: MeshNode, metrics: MetricsServer | undefined, life: Lifecycle) {
    this.node = node
    this.metrics = metrics
    this.life = life
  }

  static async start(ctx: DaemonContext, init: MeshDaemonInit): Promise<MeshDaemon> {
    const { config } = ctx
    const node = await MeshNode.create({
      role: init.role,
      version: MTC_VERSION,
      listen: config.listen,
      announce: config.announce,
      bootstraps: config.bootstraps,
      psk: config.psk,
      privateKey: config.privateKey,
      // Not the node's own --addr-file: runDaemon writes it once the daemon has started.
      registry: init.registry,
      dhtClient: init.dhtClient,
      logger: ctx.logger,
    })
    const life = new Lifecycle(ctx.log.error)
    let started = false
    const metrics =
      config.metrics != null
        ? new MetricsServer({
            ...config.metrics,
            registry: node.registry,
            healthy: () => started && !life.stopped && ctx.stopping?.aborted !== true,
            routes: init.routes,
          })
        : undefined
    await life.starting(async () => {
      if (metrics != null) {
        await metrics.start()
        life.defer('metrics server', () => metrics.stop())
      }
      // Peers (the bootstrap's service discovery) learn where the metrics are.
      if (metrics != null && config.metrics != null) {
        const host = advertisedMetricsHost(config.metrics.host)
        await serveMetricsInfo(node.libp2p, { port: metrics.port(), host })
      }
      await node.start()
      life.defer('mesh node', () => node.stop())
    })
    started = true
    ctx.multiaddrs = () => node.multiaddrs()
    const daemon = new MeshDaemon(node, metrics, life)
    ctx.log('peer %p listening on %s', node.peerId, node.multiaddrs().join(' '))
    if (metrics != null) ctx.log('metrics on http://%s/metrics', metrics.address())
    if (config.psk == null) ctx.log.error('running WITHOUT a PSK: anyone can join this node')
    return daemon
  }

  /** Node, then metrics server; safe twice. */
  async stop(): Promise<void> {
    await this.life.stop()
  }
}
