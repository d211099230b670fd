import {
  type CommandSpec,
  DaemonFlags,
  type DaemonSpec,
  type FlagValues,
  Lifecycle,
  MeshDaemon,
  MTC_VERSION,
  NODE_ENV_HELP,
  NODE_FLAGS,
  runDaemon,
  sendJson,
} from '@mtc/p2pnode'
import { Registry } from 'prom-client'
import { DEFAULT_LISTEN, DEFAULT_METRICS } from './constants.ts'
import { PingMonitor } from './monitor.ts'
import { discoveryTargets, requestHost, type SelfInfo, statusDocument } from './status.ts'
import { statusPageRoutes } from './status-page.ts'

export const COMMAND: CommandSpec = {
  name: 'ping-monitor',
  summary: 'bootstrap node of an mtc mesh; measures the RTT to every peer',
  usage: '[flags]',
  flags: {
    ...NODE_FLAGS,
    interval: {
      type: 'string',
      arg: 'DURATION',
      help: 'how often every peer is pinged (default 1s)',
    },
    'peer-expiry': {
      type: 'string',
      arg: 'DURATION',
      help: 'forget peers unheard for this long (default 10m)',
    },
  },
  epilog: `Defaults: --listen ${DEFAULT_LISTEN} --metrics ${DEFAULT_METRICS}
Metrics at http://HOST:PORT/metrics, the peer table as JSON at /peers, liveness at /healthz,
the status page at /, its JSON at /api/status, and every peer's metrics endpoint in
Prometheus' HTTP service discovery format at /sd.
A redundant bootstrap is a second ping-monitor started with --bootstrap <first one>.

${NODE_ENV_HELP}`,
}

/** ping-monitor's own settings, validated and frozen before it starts. */
export interface PingMonitorConfig {
  readonly intervalMs: number | undefined
  readonly peerExpiryMs: number | undefined
}

export function pingMonitorConfig(values: FlagValues): PingMonitorConfig {
  const flags = new DaemonFlags(values)
  return Object.freeze({
    intervalMs: flags.duration('interval'),
    peerExpiryMs: flags.duration('peer-expiry'),
  })
}

export const PING_MONITOR: DaemonSpec = {
  command: COMMAND,
  role: 'ping-monitor',
  nodeDefaults: { listen: [DEFAULT_LISTEN], metrics: DEFAULT_METRICS },
  async start(ctx) {
    const config = pingMonitorConfig(ctx.values)
    const life = new Lifecycle(ctx.log.error)
    return await life.starting(async () => {
      const registry = new Registry()
      let monitor: PingMonitor | undefined
      let self: SelfInfo | undefined
      const peers = () => monitor?.table.all() ?? []
      const mesh = await MeshDaemon.start(ctx, {
        role: 'ping-monitor',
        registry,
        routes: {
          ...(await statusPageRoutes()),
          '/peers': (_req, res) => sendJson(res, peers()),
          '/sd': (req, res) => {
            sendJson(res, self != null ? discoveryTargets(self, peers(), requestHost(req)) : [])
          },
          '/api/status': (_req, res) => {
            if (self == null) sendJson(res, { error: 'starting' }, 503)
            else sendJson(res, statusDocument(self, peers(), monitor?.errors.all() ?? []))
          },
        },
      })
      life.defer('mesh', () => mesh.stop())
      self = {
        peerId: mesh.node.peerId.toString(),
        role: 'ping-monitor',
        version: MTC_VERSION,
        metrics:
          mesh.metrics != null && ctx.config.metrics != null
            ? { host: ctx.config.metrics.host, port: mesh.metrics.port() }
            : undefined,
      }
      const m = new PingMonitor(mesh.node, { ...config, registry, log: ctx.log })
      monitor = m
      m.start()
      life.defer('ping monitor', () => m.stop())
      return { stop: () => life.stop() }
    })
  },
}

export async function main(argv: string[], env = process.env): Promise<number> {
  return await runDaemon(PING_MONITOR, argv, env)
}
