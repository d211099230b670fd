import type { PrivateKey } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { UsageError } from './errors.ts'
import { type FlagSpecs, type FlagValues, parseHostPort, parseMultiaddrFlag } from './flags.ts'
import { derivePsk, type Psk, readSwarmKeyFile } from './psk.ts'

export const LOG_LEVELS = ['silent', 'error', 'info', 'debug', 'trace'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

/** The overlay flags every daemon shares. */
export const NODE_FLAGS: FlagSpecs = {
  listen: {
    type: 'string',
    multiple: true,
    arg: 'MULTIADDR',
    help: 'address to listen on',
  },
  announce: {
    type: 'string',
    multiple: true,
    arg: 'MULTIADDR',
    help: 'address peers are told to dial, instead of the listen addresses (port forward, NAT)',
  },
  bootstrap: {
    type: 'string',
    multiple: true,
    arg: 'MULTIADDR',
    help: 'bootstrap peer to keep connected (env P2P_BOOTSTRAPS, space separated)',
  },
  psk: {
    type: 'string',
    arg: 'PASSPHRASE',
    help: 'private-network passphrase, stretched with scrypt (env P2P_PSK)',
  },
  'psk-file': {
    type: 'string',
    arg: 'PATH',
    help: 'private-network swarm key file (env P2P_PSK_FILE); make one with mtc-keygen',
  },
  'no-psk': { type: 'boolean', help: 'join an open network without a PSK (not recommended)' },
  'key-file': {
    type: 'string',
    arg: 'PATH',
    help: 'persistent identity, created with mode 0600 if missing (default: ephemeral)',
  },
  'addr-file': {
    type: 'string',
    arg: 'PATH',
    help: "write the node's multiaddrs here once listening, one per line",
  },
  metrics: {
    type: 'string',
    arg: '[HOST:]PORT',
    help: 'serve /metrics and /healthz here (port 0: any free port)',
  },
  'log-level': {
    type: 'string',
    arg: 'LEVEL',
    help: `one of ${LOG_LEVELS.join(', ')} (default info; DEBUG=mtc:* adds more)`,
  },
}

export const NODE_ENV_HELP = `Environment:
  P2P_BOOTSTRAPS   space-separated bootstrap multiaddrs (used when no --bootstrap is given)
  P2P_PSK          private-network passphrase (when neither --psk nor --psk-file is given)
  P2P_PSK_FILE     private-network swarm key file (likewise)
  DEBUG            extra debug namespaces, e.g. DEBUG=libp2p:* for the libp2p stack`

export interface NodeDefaults {
  listen: string[]
  /** Metrics `[HOST:]PORT`; undefined = no metrics server unless --metrics is given. */
  metrics?: string
}

/** The validated, frozen overlay configuration of a daemon. */
export interface NodeConfig {
  readonly listen: string[]
  /** What peers learn instead of the listen addresses; empty: the listen addresses. */
  readonly announce: string[]
  readonly bootstraps: Multiaddr[]
  readonly psk: Psk | undefined
  readonly privateKey: PrivateKey | undefined
  readonly addrFile: string | undefined
  readonly metrics: { host: string; port: number } | undefined
  readonly logLevel: LogLevel
}

/**
 * Validates the overlay flags (flags win over environment) and loads what they name.
 * Every problem is a UsageError with one line that names the flag.
 */
export async function resolveNodeConfig(
  values: FlagValues,
  env: NodeJS.ProcessEnv,
  defaults: NodeDefaults,
): Promise<NodeConfig> {
  const listenValues = (values.listen as string[] | undefined) ?? defaults.listen
  for (const v of listenValues) parseMultiaddrFlag('listen', v)
  const announce = (values.announce as string[] | undefined) ?? []
  for (const v of announce) parseMultiaddrFlag('announce', v)

  const bootstrapValues =
    (values.bootstrap as string[] | undefined) ??
    (env.P2P_BOOTSTRAPS ?? '').split(/\s+/).filter((s) => s !== '')
  const bootstraps = bootstrapValues.map((v) => parseMultiaddrFlag('bootstrap', v))

  const psk = await resolvePsk(values, env)

  const logLevel = (values['log-level'] as string | undefined) ?? 'info'
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new UsageError(`--log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(', ')}`)
  }

  const metricsValue = (values.metrics as string | undefined) ?? defaults.metrics
  const keyFile = values['key-file'] as string | undefined
  let privateKey: PrivateKey | undefined
  if (keyFile != null) {
    try {
      // Loaded when used: the key codecs are most of what this module would load, and a
      // CLI's --help reads NODE_FLAGS from here (@mtc/p2pnode/cli).
      const { loadOrCreateKey } = await import('./identity.ts')
      privateKey = await loadOrCreateKey(keyFile)
    } catch (err) {
      throw new UsageError(`--key-file: ${(err as Error).message}`)
    }
  }

  return Object.freeze({
    listen: listenValues,
    announce,
    bootstraps,
    psk,
    privateKey,
    addrFile: values['addr-file'] as string | undefined,
    metrics: metricsValue != null ? parseHostPort('metrics', metricsValue) : undefined,
    logLevel: logLevel as LogLevel,
  })
}

async function resolvePsk(values: FlagValues, env: NodeJS.ProcessEnv): Promise<Psk | undefined> {
  const passphrase = values.psk as string | undefined
  const file = values['psk-file'] as string | undefined
  if (values['no-psk'] === true) {
    if (passphrase != null || file != null) {
      throw new UsageError('--no-psk contradicts --psk/--psk-file')
    }
    return undefined
  }
  if (passphrase != null && file != null) {
    throw new UsageError('give either --psk or --psk-file, not both')
  }
  try {
    if (file != null) return await readSwarmKeyFile(file)
    if (passphrase != null) return await derivePsk(passphrase)
    if (env.P2P_PSK_FILE != null && env.P2P_PSK_FILE !== '') {
      return await readSwarmKeyFile(env.P2P_PSK_FILE)
    }
    if (env.P2P_PSK != null && env.P2P_PSK !== '') return await derivePsk(env.P2P_PSK)
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  throw new UsageError(
    'no private-network key: give --psk-file, --psk (or P2P_PSK_FILE/P2P_PSK), or --no-psk to run without one',
  )
}
