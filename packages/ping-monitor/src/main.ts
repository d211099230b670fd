import {
  type CommandSpec,
  type DaemonSpec,
  MeshDaemon,
  MTC_VERSION,
  NODE_ENV_HELP,
  NODE_FLAGS,
  parseDurationFlag,
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

export const PING_MONITOR: DaemonSpec = {
  command: COMMAND,
  role: 'ping-monitor',
  nodeDefaults: { listen: [DEFAULT_LISTEN], metrics: DEFAULT_METRICS },
  async start(ctx) {
    const interval = ctx.values.interval as string | undefined
    const expiry = ctx.values['peer-expiry'] as string | undefined
    const intervalMs = interval != null ? parseDurationFlag('interval', interval) : undefined
    const peerExpiryMs = expiry != null ? parseDurationFlag('peer-expiry', expiry) : undefined
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
    self = {
      peerId: mesh.node.peerId.toString(),
      role: 'ping-monitor',
      version: MTC_VERSION,
      metrics:
        mesh.metrics != null && ctx.config.metrics != null
          ? { host: ctx.config.metrics.host, port: mesh.metrics.port() }
          : undefined,
    }
    monitor = new PingMonitor(mesh.node, { intervalMs, peerExpiryMs, registry, log: ctx.log })
    monitor.start()
    return {
      async stop() {
        await monitor?.stop()
        await mesh.stop()
      },
    }
  },
}

export async function main(argv: string[], env = process.env): Promise<number> {
  return await runDaemon(PING_MONITOR, argv, env)
}
