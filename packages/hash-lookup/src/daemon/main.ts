import { resolve } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { BlobStore } from '@mtc/blobs'
import {
  Announcer,
  type CommandSpec,
  DaemonFlags,
  type DaemonSpec,
  type FlagValues,
  Lifecycle,
  MeshDaemon,
  NODE_ENV_HELP,
  NODE_FLAGS,
  runDaemon,
  UsageError,
} from '@mtc/p2pnode'
import { Registry } from 'prom-client'
import {
  BLOB_GC_INTERVAL_MS,
  DEFAULT_ETCD_CLIENT_PORT,
  DEFAULT_ETCD_HOST,
  DEFAULT_ETCD_PEER_PORT,
  DEFAULT_MAX_BLOB_BYTES,
  ETCD_HEALTH_CHECK_INTERVAL_MS,
} from '../constants.ts'
import { BlobCollector } from './blob-gc.ts'
import { createEtcdClient } from './etcd-client.ts'
import { RecordStore } from './etcd-store.ts'
import { EtcdSupervisor } from './etcd-supervisor.ts'
import { HashLookupMetrics } from './metrics.ts'
import { HashLookupServer } from './server.ts'
import { parseByteSize } from './sizes.ts'

const DEFAULT_METRICS = '0.0.0.0:9102'
const DEFAULT_DATA_DIR = 'hl-data'

export const COMMAND: CommandSpec = {
  name: 'hl-service',
  summary: "the mesh's service registry (etcd) and image tarball store",
  usage: '(--etcd URL[,URL...] | --new-etcd-cluster) [flags]',
  flags: {
    ...NODE_FLAGS,
    etcd: { type: 'string', arg: 'URL[,URL...]', help: 'client URLs of an existing etcd cluster' },
    'new-etcd-cluster': {
      type: 'boolean',
      help: 'start and supervise a local single-member etcd (the `etcd` binary on PATH)',
    },
    'etcd-data-dir': {
      type: 'string',
      arg: 'PATH',
      help: "the local etcd's data (default DATA_DIR/etcd)",
    },
    'etcd-ip': {
      type: 'string',
      arg: 'IP',
      help: `address the local etcd listens on (default ${DEFAULT_ETCD_HOST})`,
    },
    'etcd-client-port': {
      type: 'string',
      arg: 'PORT',
      help: `local etcd client port (default ${DEFAULT_ETCD_CLIENT_PORT})`,
    },
    'etcd-peer-port': {
      type: 'string',
      arg: 'PORT',
      help: `local etcd peer port (default ${DEFAULT_ETCD_PEER_PORT})`,
    },
    'data-dir': {
      type: 'string',
      arg: 'PATH',
      help: `image tarballs, content-addressed (default ./${DEFAULT_DATA_DIR})`,
    },
    'max-blob-size': {
      type: 'string',
      arg: 'BYTES',
      help: 'largest tarball accepted, e.g. 500M, 2G (default 2G)',
    },
    'max-storage': {
      type: 'string',
      arg: 'BYTES',
      help: 'quota on stored tarballs plus uploads in progress, e.g. 20G (default: the disk)',
    },
    'gc-interval': {
      type: 'string',
      arg: 'DURATION',
      help: 'period of the sweep for tarballs no record references (default 10m)',
    },
    writer: {
      type: 'string',
      multiple: true,
      arg: 'PEER_ID',
      help: 'only these peers may add or delete services (default: every mesh peer)',
    },
  },
  epilog: `Defaults: --listen /ip4/0.0.0.0/tcp/0 --metrics ${DEFAULT_METRICS}
Metrics at /metrics (mtc_hl_*), liveness at /healthz.

${NODE_ENV_HELP}`,
}

interface HlConfig {
  etcd: { endpoints: string[] } | { supervise: ConstructorParameters<typeof EtcdSupervisor>[0] }
  dataDir: string
  maxBlobSize: number
  maxStorage: number | undefined
  gcIntervalMs: number
  writers: string[]
}

function hlConfig(values: FlagValues): HlConfig {
  const flags = new DaemonFlags(values)
  const dataDir = resolve(flags.string('data-dir') ?? DEFAULT_DATA_DIR)
  const etcd = flags.string('etcd')
  const supervise = flags.boolean('new-etcd-cluster')
  if ((etcd != null) === supervise) {
    throw new UsageError('give exactly one of --etcd URL[,URL...] and --new-etcd-cluster')
  }
  const localOnly = ['etcd-data-dir', 'etcd-ip', 'etcd-client-port', 'etcd-peer-port'].filter(
    (f) => values[f] != null,
  )
  if (!supervise && localOnly.length > 0) {
    throw new UsageError(`--${localOnly[0]} applies only with --new-etcd-cluster`)
  }
  const writers = flags.strings('writer').map((w) => {
    try {
      return peerIdFromString(w).toString()
    } catch {
      throw new UsageError(`--writer: "${w}" is not a peer ID`)
    }
  })
  const bytes = (flag: string) => flags.parse(flag, (v) => parseByteSize(flag, v))
  const common = {
    dataDir,
    writers,
    maxBlobSize: bytes('max-blob-size') ?? DEFAULT_MAX_BLOB_BYTES,
    maxStorage: bytes('max-storage'),
    gcIntervalMs: flags.duration('gc-interval') ?? BLOB_GC_INTERVAL_MS,
  }
  if (etcd != null) {
    const endpoints = etcd.split(',').map((u) => u.trim())
    for (const u of endpoints) {
      if (!/^https?:\/\/[^/\s]+\/?$/.test(u))
        throw new UsageError(`--etcd: "${u}" is not an http(s)://HOST:PORT URL`)
    }
    return Object.freeze({ ...common, etcd: { endpoints } })
  }
  return Object.freeze({
    ...common,
    etcd: {
      supervise: {
        dataDir: resolve(flags.string('etcd-data-dir') ?? `${dataDir}/etcd`),
        host: flags.string('etcd-ip') ?? DEFAULT_ETCD_HOST,
        clientPort: flags.port('etcd-client-port') ?? DEFAULT_ETCD_CLIENT_PORT,
        peerPort: flags.port('etcd-peer-port') ?? DEFAULT_ETCD_PEER_PORT,
      },
    },
  })
}

export const HL_SERVICE: DaemonSpec = {
  command: COMMAND,
  role: 'hl-service',
  nodeDefaults: { listen: ['/ip4/0.0.0.0/tcp/0'], metrics: DEFAULT_METRICS },
  async start(ctx) {
    const config = hlConfig(ctx.values)
    const log = ctx.log
    // Everything started so far is stopped in reverse, also when start fails.
    const life = new Lifecycle(log.error)
    return await life.starting(async () => {
      let endpoints: string[]
      if ('supervise' in config.etcd) {
        const etcdLog = ctx.logger.forComponent('mtc:hl-service:etcd')
        const supervisor = new EtcdSupervisor({ ...config.etcd.supervise, log: (m) => etcdLog(m) })
        life.defer('etcd', () => supervisor.stop())
        await supervisor.start()
        endpoints = supervisor.endpoints
        log('local etcd at %s (data %s)', endpoints.join(','), config.etcd.supervise.dataDir)
      } else {
        endpoints = config.etcd.endpoints
      }
      const etcd = createEtcdClient(endpoints)
      life.defer('etcd client', () => etcd.close())
      const records = new RecordStore({ etcd })
      const blobs = new BlobStore({ dataDir: config.dataDir, maxStorageBytes: config.maxStorage })
      await blobs.start()

      const registry = new Registry()
      const metrics = new HashLookupMetrics(registry, () => ({
        stored: blobs.storedBytes,
        reserved: blobs.reservedBytes,
        quota: config.maxStorage,
      }))
      const mesh = await MeshDaemon.start(ctx, { role: 'hl-service', registry })
      life.defer('mesh', () => mesh.stop())
      const announcer = new Announcer(
        mesh.node.libp2p,
        ctx.logger.forComponent('mtc:hl-service:announce'),
      )
      const collector = new BlobCollector(
        {
          blobs,
          records,
          log,
          onCollected: (digest, bytes) => {
            announcer.remove('blob', digest)
            metrics.blobsCollected.inc()
            metrics.blobBytesCollected.inc(bytes)
          },
          onSweep: (outcome) => metrics.blobSweeps.inc({ outcome }),
        },
        { intervalMs: config.gcIntervalMs },
      )
      const server = new HashLookupServer(
        { libp2p: mesh.node.libp2p, records, blobs, announcer, metrics, log, collector },
        { writers: config.writers, maxBlobSize: config.maxBlobSize },
      )
      await server.start()
      life.defer('registry server', () => server.stop())
      announcer.start()
      life.defer('announcer', () => announcer.stop())
      collector.start() // the first sweep also removes what an interrupted put left behind
      life.defer('blob collector', () => collector.stop())

      const health = setInterval(() => {
        records
          .list({ limit: 1 })
          .then(() => metrics.etcdUp.set(1))
          .catch(() => metrics.etcdUp.set(0))
      }, ETCD_HEALTH_CHECK_INTERVAL_MS)
      life.defer('etcd health check', () => clearInterval(health))
      metrics.etcdUp.set(1)
      log(
        'serving the registry; writers: %s',
        config.writers.length > 0 ? config.writers.join(' ') : 'any mesh peer',
      )
      return { stop: () => life.stop() }
    })
  },
}

export async function main(argv: string[], env = process.env): Promise<number> {
  return await runDaemon(HL_SERVICE, argv, env)
}
