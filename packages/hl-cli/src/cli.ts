import { open, stat } from 'node:fs/promises'
import type { HashLookupClient } from '@mtc/hash-lookup'
import {
  assertServiceName,
  DEFAULT_CONCURRENCY,
  DEFAULT_MAX_INSTANCES,
  DEFAULT_MIN_INSTANCES,
  type PerfRequirements,
  RegistryUnavailableError,
  type ScalingSettings,
  type ServiceRecord,
  scalingOf,
  validateScaling,
} from '@mtc/hash-lookup/core'
import type { MeshNode } from '@mtc/p2pnode'
import {
  type CommandSpec,
  helpText,
  MTC_VERSION,
  NODE_FLAGS,
  parseCommandLine,
  parseDurationFlag,
  parseMultiaddrFlag,
  UsageError,
} from '@mtc/p2pnode/cli'
import { EXIT_CODES, exitCodeFor } from './exit-codes.ts'
import { formatBytes, formatHistory, formatRecord, formatTable, progressBar } from './format.ts'

const DEFAULT_TIMEOUT = '30s'

export const COMMAND: CommandSpec = {
  name: 'hl-cli',
  summary: 'register and manage the services of an mtc mesh',
  usage: '[flags] <add|get|list|delete> [args]',
  flags: {
    hl: {
      type: 'string',
      arg: 'MULTIADDR',
      help: 'talk to this hl-service (default: find one through the DHT)',
    },
    bootstrap: NODE_FLAGS.bootstrap,
    psk: NODE_FLAGS.psk,
    'psk-file': NODE_FLAGS['psk-file'],
    'no-psk': NODE_FLAGS['no-psk'],
    'key-file': {
      ...NODE_FLAGS['key-file'],
      help: 'identity to write with (see hl-service --writer)',
    },
    json: { type: 'boolean', help: 'print JSON instead of text' },
    timeout: {
      type: 'string',
      arg: 'DURATION',
      help: `give up after this long (default ${DEFAULT_TIMEOUT}; uploads: per chunk)`,
    },
    'log-level': NODE_FLAGS['log-level'],
    file: {
      type: 'string',
      arg: 'PATH',
      help: 'add: `docker save` tarball of the image, uploaded to hl-service',
    },
    'image-id': {
      type: 'string',
      arg: 'sha256:HEX',
      help: 'add: image ID (needed without --file)',
    },
    'soft-rtt': {
      type: 'string',
      arg: 'MS',
      help: 'add: RTT in milliseconds the service should get',
    },
    'hard-rtt': {
      type: 'string',
      arg: 'MS',
      help: 'add: RTT in milliseconds above which an instance is not used',
    },
    cpus: { type: 'string', arg: 'N', help: 'add: CPUs an instance may use' },
    concurrency: {
      type: 'string',
      arg: 'N',
      help: `add: target requests in flight per instance; above it the mesh scales out (default ${DEFAULT_CONCURRENCY})`,
    },
    'min-instances': {
      type: 'string',
      arg: 'N',
      help: `add: instances kept running with no traffic (default ${DEFAULT_MIN_INSTANCES})`,
    },
    'max-instances': {
      type: 'string',
      arg: 'N',
      help: `add: instances of the service in the whole mesh, at most (default ${DEFAULT_MAX_INSTANCES})`,
    },
    memory: { type: 'string', arg: 'BYTES', help: 'add: memory an instance may use' },
    'expect-version': {
      type: 'string',
      arg: 'N',
      help: 'add/delete: only if the record still has this version (0: must not exist)',
    },
    'health-path': {
      type: 'string',
      arg: 'PATH',
      help: 'add: HTTP path an instance is ready at only while it answers 2xx (e.g. /healthz)',
    },
    'health-interval': {
      type: 'string',
      arg: 'DURATION',
      help: 'add: between two health checks (default 2s)',
    },
    'health-threshold': {
      type: 'string',
      arg: 'N',
      help: 'add: failed health checks in a row before an instance is not ready (default 3)',
    },
    to: { type: 'string', arg: 'VERSION', help: 'rollback: the version to make current again' },
    prefix: { type: 'string', arg: 'PREFIX', help: 'list: only names starting with this' },
    limit: {
      type: 'string',
      arg: 'N',
      help: 'list: at most N records (default: all, fetched page by page)',
    },
  },
  positionals: { min: 1, max: 3 },
  epilog: `Commands:
  add [--file image.tar] [--image-id ID] [--soft-rtt MS] [--hard-rtt MS]
      [--concurrency N] [--min-instances N] [--max-instances N] IMAGE NAME
                       register (or replace) service NAME running IMAGE (repo[:tag][@sha256:...])
  get NAME             show a service
  list [--prefix P]    list services
  delete NAME          remove a service
  history NAME         the service's current and earlier versions (newest first)
  rollback [--to VERSION] NAME
                       make an earlier version current again (default: the newest earlier
                       one with another image); it is rolled out like an update
  rollout status NAME  wait for the rollout of the current version: exit 0 once every
                       instance runs its image, 7 if it failed (needs --bootstrap)

Exit codes:
${EXIT_CODES.map((e) => `  ${String(e.exit).padEnd(3)} ${e.code.padEnd(26)} ${e.meaning}`).join('\n')}

Environment: P2P_BOOTSTRAPS, P2P_PSK, P2P_PSK_FILE as for the daemons.`,
}

const COMMAND_FLAGS: Record<string, string[]> = {
  add: [
    'file',
    'image-id',
    'soft-rtt',
    'hard-rtt',
    'cpus',
    'memory',
    'expect-version',
    'concurrency',
    'min-instances',
    'max-instances',
    'health-path',
    'health-interval',
    'health-threshold',
  ],
  history: [],
  rollback: ['to'],
  rollout: [],
  get: [],
  list: ['prefix', 'limit'],
  delete: ['expect-version'],
}
const ARITY: Record<string, number> = {
  add: 2,
  get: 1,
  list: 0,
  delete: 1,
  history: 1,
  rollback: 1,
  rollout: 2,
}

export interface CliIO {
  stdout: (s: string) => unknown
  stderr: (s: string) => unknown
  isTTY: boolean
}

const processIO: CliIO = {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
  isTTY: process.stderr.isTTY === true,
}

/** hl-cli's main: returns the exit code (see EXIT_CODES). */
export async function main(
  argv: string[],
  env = process.env,
  io: CliIO = processIO,
): Promise<number> {
  let node: MeshNode | undefined
  try {
    const parsed = parseCommandLine(COMMAND, argv)
    if (parsed.kind === 'help') {
      io.stdout(helpText(COMMAND, MTC_VERSION))
      return 0
    }
    if (parsed.kind === 'version') {
      io.stdout(`hl-cli ${MTC_VERSION}\n`)
      return 0
    }
    const { values, positionals } = parsed
    const [command, ...args] = positionals
    if (!(command in ARITY))
      throw new UsageError(
        `unknown command "${command}" (add, get, list, delete, history, rollback, rollout)`,
      )
    if (args.length !== ARITY[command]) {
      throw new UsageError(
        `${command} takes ${ARITY[command]} argument(s), got ${args.length} (see --help)`,
      )
    }
    for (const flag of Object.values(COMMAND_FLAGS).flat()) {
      if (values[flag] != null && !COMMAND_FLAGS[command].includes(flag)) {
        throw new UsageError(`--${flag} does not apply to ${command}`)
      }
    }
    if (command === 'rollout' && args[0] !== 'status') {
      throw new UsageError(`unknown rollout command "${args[0]}" (status)`)
    }
    const timeoutMs = parseDurationFlag(
      'timeout',
      (values.timeout as string | undefined) ?? DEFAULT_TIMEOUT,
    )
    const hl = values.hl != null ? parseMultiaddrFlag('hl', values.hl as string) : undefined
    const request = buildRequest(command, args, values)
    const upload =
      command === 'add' && values.file != null ? await openUpload(values.file as string) : undefined
    // The mesh stack loads only now, so --help, --version and usage errors print at once.
    const [mesh, registry] = await Promise.all([import('@mtc/p2pnode'), import('@mtc/hash-lookup')])
    const config = await mesh.resolveNodeConfig(values, env, { listen: [] })
    mesh.configureLogging(config.logLevel === 'info' ? 'error' : config.logLevel, env.DEBUG)
    if (command === 'rollout' && config.bootstraps.length === 0) {
      throw new UsageError(
        'rollout status finds the allocators through --bootstrap (P2P_BOOTSTRAPS)',
      )
    }
    if (hl == null && config.bootstraps.length === 0) {
      throw new UsageError(
        'give --hl MULTIADDR, or --bootstrap (P2P_BOOTSTRAPS) to find hl-service',
      )
    }

    node = await mesh.MeshNode.startClient({
      role: 'hl-cli',
      version: MTC_VERSION,
      // rollout status finds the allocators through the DHT, even with --hl.
      bootstraps: hl != null && command !== 'rollout' ? [] : config.bootstraps,
      psk: config.psk,
      privateKey: config.privateKey,
    })
    const signal = AbortSignal.timeout(timeoutMs)
    if (hl == null || command === 'rollout') {
      const n = node
      await mesh
        .waitUntil(() => n.connectedBootstraps().length > 0, signal, 'no bootstrap reachable')
        .catch((err: Error) => {
          throw new RegistryUnavailableError(err.message)
        })
    }
    const client = new registry.HashLookupClient(
      node.libp2p,
      hl ?? (await registry.findHashLookup(node.libp2p, signal)),
      // An upload has no overall deadline: --timeout bounds each wait for the service.
      { idleTimeoutMs: timeoutMs },
    )
    const json = values.json === true
    const out = (value: unknown, text: string) =>
      io.stdout(json ? `${JSON.stringify(value, null, 2)}\n` : text)

    switch (command) {
      case 'add': {
        const onProgress =
          io.isTTY && upload != null && !json ? progressBar(upload.size, io.stderr) : undefined
        const record = await client.put(
          request as Parameters<HashLookupClient['put']>[0],
          upload != null ? { size: upload.size, source: upload.read(onProgress) } : undefined,
          upload != null ? undefined : signal,
        )
        out(
          record,
          `added ${record.name} (version ${record.version}): ${record.image}${record.blob != null ? `, tarball ${formatBytes(record.blob.size)}` : ''}\n`,
        )
        break
      }
      case 'get': {
        const record = await client.get(args[0], signal)
        // The effective scaling settings, defaults included.
        out({ ...record, ...scalingOf(record) }, formatRecord(record))
        break
      }
      case 'list': {
        const records = await listAll(client, values, signal)
        out(records, records.length === 0 ? 'no services\n' : formatTable(records))
        break
      }
      case 'history': {
        const records = await client.history(args[0], signal)
        out(records, formatHistory(records))
        break
      }
      case 'rollback': {
        const record = await client.rollback(args[0], optionalInt(values, 'to'), signal)
        out(
          record,
          `rolled ${record.name} back: version ${record.version} runs ${record.image} (${record.imageId})\n`,
        )
        break
      }
      case 'rollout': {
        // Loaded only here: it needs the allocator client and DHT lookups.
        const { RolloutFailedError, waitForRollout } = await import('./rollout-status.ts')
        const status = await waitForRollout(node.libp2p, client, args[1], signal, (line) => {
          if (!json) io.stdout(`${line}\n`)
        })
        if (json) io.stdout(`${JSON.stringify(status, null, 2)}\n`)
        if (status.state === 'failed') {
          throw new RolloutFailedError(status.message ?? 'the rollout failed')
        }
        break
      }
      case 'delete': {
        await client.delete(args[0], optionalInt(values, 'expect-version'), signal)
        out({ deleted: args[0] }, `deleted ${args[0]}\n`)
        break
      }
    }
    return 0
  } catch (err) {
    const e = err as Error & { code?: string }
    const code = e instanceof UsageError ? 'ERR_USAGE' : e.code
    const message = e.name === 'TimeoutError' || e.name === 'AbortError' ? 'timed out' : e.message
    io.stderr(`hl-cli: ${message}${code != null && code !== 'ERR_USAGE' ? ` (${code})` : ''}\n`)
    return exitCodeFor(code)
  } finally {
    await node?.stop()
  }
}

function buildRequest(command: string, args: string[], values: Record<string, unknown>): unknown {
  if (command !== 'add') {
    if (args[0] != null) assertUsage(() => assertServiceName(args[0]))
    return undefined
  }
  const [image, name] = args
  assertUsage(() => assertServiceName(name))
  const perf: PerfRequirements = {}
  const soft = optionalNumber(values, 'soft-rtt')
  const hard = optionalNumber(values, 'hard-rtt')
  const cpus = optionalNumber(values, 'cpus')
  const memory = optionalNumber(values, 'memory')
  if (soft != null) perf.softRttMs = soft
  if (hard != null) perf.hardRttMs = hard
  if (cpus != null) perf.cpus = cpus
  if (memory != null) perf.memoryBytes = memory
  if (values.file == null && values['image-id'] == null) {
    throw new UsageError(
      'add without --file needs --image-id sha256:... (docker inspect -f {{.Id}} IMAGE)',
    )
  }
  const scaling: Partial<ScalingSettings> = {
    concurrency: optionalInt(values, 'concurrency'),
    minInstances: optionalInt(values, 'min-instances'),
    maxInstances: optionalInt(values, 'max-instances'),
  }
  const flagOf: Record<string, string> = {
    concurrency: '--concurrency',
    minInstances: '--min-instances',
    maxInstances: '--max-instances',
  }
  assertUsage(() => {
    try {
      validateScaling(scaling)
    } catch (err) {
      throw new Error((err as Error).message.replace(/\b[a-zA-Z]+\b/g, (w) => flagOf[w] ?? w))
    }
  })
  const health: Record<string, unknown> = {}
  if (values['health-path'] != null) health.healthPath = values['health-path']
  if (values['health-interval'] != null) {
    health.healthIntervalMs = parseDurationFlag(
      'health-interval',
      values['health-interval'] as string,
    )
  }
  const threshold = optionalInt(values, 'health-threshold')
  if (threshold != null) health.healthThreshold = threshold
  return {
    record: {
      name,
      image,
      imageId: values['image-id'] as string | undefined,
      perf,
      ...withoutUndefined(scaling),
      ...health,
    },
    expectedVersion: optionalInt(values, 'expect-version'),
  }
}

function withoutUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

function assertUsage(fn: () => unknown): void {
  try {
    fn()
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

function optionalNumber(values: Record<string, unknown>, flag: string): number | undefined {
  const v = values[flag] as string | undefined
  if (v == null) return undefined
  const n = Number(v)
  if (v.trim() === '' || !Number.isFinite(n) || n < 0)
    throw new UsageError(`--${flag}: "${v}" is not a number`)
  return n
}

function optionalInt(values: Record<string, unknown>, flag: string): number | undefined {
  const n = optionalNumber(values, flag)
  if (n != null && !Number.isSafeInteger(n))
    throw new UsageError(`--${flag}: "${values[flag]}" is not an integer`)
  return n
}

async function listAll(
  client: HashLookupClient,
  values: Record<string, unknown>,
  signal: AbortSignal,
): Promise<ServiceRecord[]> {
  const limit = optionalInt(values, 'limit')
  const records: ServiceRecord[] = []
  let after: string | undefined
  for (let page = 0; page < 10_000; page++) {
    const want = limit != null ? Math.min(limit - records.length, 1000) : 1000
    if (want <= 0) break
    const res = await client.list(
      { prefix: values.prefix as string | undefined, limit: want, after },
      signal,
    )
    records.push(...res.records)
    if (res.next == null) break
    after = res.next
  }
  return records
}

interface UploadFile {
  size: number
  read(onProgress?: (sent: number) => void): AsyncIterable<Uint8Array>
}

async function openUpload(path: string): Promise<UploadFile> {
  let size: number
  try {
    const info = await stat(path)
    if (!info.isFile()) throw new Error('not a regular file')
    size = info.size
  } catch (err) {
    throw new UsageError(`--file ${path}: ${(err as Error).message}`)
  }
  if (size === 0) throw new UsageError(`--file ${path} is empty`)
  return {
    size,
    async *read(onProgress) {
      const fh = await open(path, 'r')
      try {
        let sent = 0
        for await (const chunk of fh.createReadStream({ highWaterMark: 256 * 1024 })) {
          sent += (chunk as Buffer).byteLength
          yield chunk as Buffer
          onProgress?.(sent)
        }
      } finally {
        await fh.close()
      }
    },
  }
}
