import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { type Identify, identify } from '@libp2p/identify'
import type { ComponentLogger, Libp2p, PeerId, PrivateKey } from '@libp2p/interface'
import { type KadDHT, kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { defaultLogger } from '@libp2p/logger'
import { type Ping, ping } from '@libp2p/ping'
import { prometheusMetrics } from '@libp2p/prometheus-metrics'
import { tcp } from '@libp2p/tcp'
import type { Multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { Gauge, Registry } from 'prom-client'
import { writeFileAtomic } from './atomic-file.ts'
import { BootstrapKeeper } from './bootstrap.ts'
import {
  DHT_PROTOCOL,
  INBOUND_CONNECTIONS_PER_HOST_PER_SECOND,
  INBOUND_HANDSHAKE_TIMEOUT_MS,
  MAX_INCOMING_PENDING_CONNECTIONS,
  MAX_PENDING_HANDSHAKES_PER_HOST,
  PING_MAX_INBOUND_STREAMS,
  PING_MAX_OUTBOUND_STREAMS,
  STREAM_MAX_READ_BUFFER_BYTES,
  YAMUX_MAX_EARLY_STREAMS,
  YAMUX_MAX_INBOUND_STREAMS,
  YAMUX_MAX_STREAM_WINDOW_BYTES,
} from './constants.ts'
import { HandshakeGuard } from './handshake-guard.ts'
import { type LivenessInit, type LivenessMonitor, livenessMonitor } from './liveness.ts'
import { meshNoiseCrypto } from './noise-crypto.ts'
import { pskProtector } from './pnet.ts'
import type { Psk } from './psk.ts'
import { probeRtt, type RttService, rttService } from './rtt.ts'
import { coalescingMuxer } from './write-coalescing.ts'
import { xorBackend } from './xsalsa20.ts'

// A type alias, not an interface: libp2p's ServiceMap needs an index signature.
export type MeshServices = {
  identify: Identify
  ping: Ping
  rtt: RttService
  liveness: LivenessMonitor
  dht: KadDHT
}

export type MeshLibp2p = Libp2p<MeshServices>

export interface MeshNodeInit {
  /** What this node is (`ping-monitor`, `allocator`...): sent in identify's agent version. */
  role: string
  /** The mtc version, also in the agent version. */
  version: string
  /** Multiaddrs to listen on; none for a node that only dials (e.g. hl-cli). */
  listen: string[]
  /**
   * The only addresses peers learn (identify, DHT records, the addr file), instead of the
   * listen addresses: where a port forward, NAT or relay leads to this node.
   */
  announce?: string[]
  bootstraps: Multiaddr[]
  /** The private-network key; `undefined` only when the operator chose `--no-psk`. */
  psk: Psk | undefined
  /** Identity; a fresh ephemeral one when absent. */
  privateKey?: PrivateKey
  /** Once listening, the full multiaddrs (the announced ones with `announce`), one per line. */
  addrFile?: string
  /** Where libp2p's own metrics go; a new registry when absent. */
  registry?: Registry
  /** A short-lived node (a CLI) is a DHT client: it asks, it does not serve. */
  dhtClient?: boolean
  logger?: ComponentLogger
  /** Liveness ping intervals and silence timeout (defaults in constants.ts), for tests. */
  liveness?: Pick<LivenessInit, 'busyIntervalMs' | 'idleIntervalMs' | 'timeoutMs'>
  /** Bootstrap redial backoff, for tests. */
  bootstrapBackoffMs?: { initial: number; max: number }
}

/** The agent version a mesh node announces: `mtc/<role>/<version>`. */
export function agentVersion(role: string, version: string): string {
  return `mtc/${role}/${version}`
}

/** The mtc role of a peer from its identify agent version, if it is an mtc node. */
export function roleFromAgentVersion(agent: string | undefined): string | undefined {
  const m = /^mtc\/([a-z0-9-]+)\//.exec(agent ?? '')
  return m?.[1]
}

/** Which XSalsa20 the PSK layer runs on, as a metric: 1 on the backend's label. */
export const XOR_BACKEND_METRIC = 'mtc_psk_xor_backend_info'

function registerXorBackend(registry: Registry): void {
  if (registry.getSingleMetric(XOR_BACKEND_METRIC) != null) return
  new Gauge({
    name: XOR_BACKEND_METRIC,
    help: 'XSalsa20 backend of the PSK layer: sodium-native (libsodium) or js (the pure fallback)',
    labelNames: ['backend'],
    registers: [registry],
  }).set({ backend: xorBackend().name }, 1)
}

/**
 * One libp2p node of the mesh: TCP + PSK + Noise + Yamux, identify, ping and the mesh's
 * private kad-dht, plus bootstrap keeping and the addr file.
 */
export class MeshNode {
  readonly libp2p: MeshLibp2p
  readonly registry: Registry
  readonly role: string
  private readonly init: MeshNodeInit
  private readonly bootstraps: BootstrapKeeper

  private constructor(libp2p: MeshLibp2p, registry: Registry, init: MeshNodeInit) {
    this.libp2p = libp2p
    this.registry = registry
    this.role = init.role
    this.init = init
    this.bootstraps = new BootstrapKeeper(
      libp2p,
      (init.logger ?? defaultLogger()).forComponent('mtc:bootstrap'),
      {
        bootstraps: init.bootstraps,
        backoffInitialMs: init.bootstrapBackoffMs?.initial,
        backoffMaxMs: init.bootstrapBackoffMs?.max,
      },
    )
  }

  /**
   * A started node that only dials (no listen address, DHT client): CLIs, tools, tests
   * and benches that ask the mesh something.
   */
  static async startClient(
    init: Pick<MeshNodeInit, 'role' | 'psk' | 'privateKey'> &
      Partial<Pick<MeshNodeInit, 'version' | 'bootstraps'>>,
  ): Promise<MeshNode> {
    const node = await MeshNode.create({
      version: '0',
      bootstraps: [],
      ...init,
      listen: [],
      dhtClient: true,
    })
    try {
      await node.start()
    } catch (err) {
      await node.stop().catch(() => {})
      throw err
    }
    return node
  }

  static async create(init: MeshNodeInit): Promise<MeshNode> {
    const registry = init.registry ?? new Registry()
    registerXorBackend(registry)
    const libp2p = await createLibp2p({
      start: false,
      privateKey: init.privateKey,
      logger: init.logger,
      nodeInfo: { userAgent: agentVersion(init.role, init.version) },
      addresses: { listen: init.listen, announce: init.announce ?? [] },
      connectionManager: {
        inboundConnectionThreshold: INBOUND_CONNECTIONS_PER_HOST_PER_SECOND,
        // HandshakeGuard enforces the real caps by evicting the oldest pending
        // connection; libp2p's own cap (which refuses newcomers) only backs it up.
        maxIncomingPendingConnections: 2 * MAX_INCOMING_PENDING_CONNECTIONS,
        inboundUpgradeTimeout: INBOUND_HANDSHAKE_TIMEOUT_MS,
      },
      connectionGater: new HandshakeGuard({
        maxPending: MAX_INCOMING_PENDING_CONNECTIONS,
        maxPendingPerHost: MAX_PENDING_HANDSHAKES_PER_HOST,
        registry,
      }).gater(),
      // Replaced by the `liveness` service: libp2p's monitor aborts a connection whenever
      // its ping fails, even for a local reason (a stream limit), cutting every stream.
      connectionMonitor: { enabled: false },
      transports: [tcp()],
      // One KeyObject per session key instead of a key import per message.
      connectionEncrypters: [noise({ crypto: meshNoiseCrypto })],
      streamMuxers: [
        // Frames written in one event-loop turn leave as one encrypted message.
        coalescingMuxer(
          yamux({
            maxInboundStreams: YAMUX_MAX_INBOUND_STREAMS,
            maxEarlyStreams: YAMUX_MAX_EARLY_STREAMS,
            streamOptions: {
              maxStreamWindowSize: YAMUX_MAX_STREAM_WINDOW_BYTES,
              maxReadBufferLength: STREAM_MAX_READ_BUFFER_BYTES,
            },
          }),
        ),
      ],
      // The nonce exchange is bounded by the upgrade's signal: inbound the whole handshake
      // by INBOUND_HANDSHAKE_TIMEOUT_MS, outbound the dial's per-address timeout (6 s).
      connectionProtector: init.psk != null ? pskProtector({ psk: init.psk }) : undefined,
      metrics: prometheusMetrics({ registry, collectDefaultMetrics: true }),
      services: {
        identify: identify(),
        ping: ping({
          maxInboundStreams: PING_MAX_INBOUND_STREAMS,
          maxOutboundStreams: PING_MAX_OUTBOUND_STREAMS,
        }),
        rtt: rttService(),
        liveness: livenessMonitor({ ...init.liveness, registry }),
        dht: kadDHT({
          protocol: DHT_PROTOCOL,
          clientMode: init.dhtClient === true,
          // Every query waits for the first self-query, which kad-dht starts 1 s after
          // start; a client asks once and exits, so it starts that walk at once (hl-cli
          // list through the DHT: 1.6 s before, see the hl-cli README).
          ...(init.dhtClient === true ? { initialQuerySelfInterval: 0 } : {}),
          // Mesh hosts talk over private and loopback addresses; the default mapper
          // (made for the public DHT) would drop them.
          peerInfoMapper: passthroughMapper,
        }),
      },
    })
    return new MeshNode(libp2p, registry, init)
  }

  get peerId(): PeerId {
    return this.libp2p.peerId
  }

  async start(): Promise<void> {
    await this.libp2p.start()
    if (this.init.addrFile != null) {
      await writeFileAtomic(this.init.addrFile, `${this.multiaddrs().join('\n')}\n`)
    }
    this.bootstraps.start()
  }

  async stop(): Promise<void> {
    await this.bootstraps.stop()
    await this.libp2p.stop()
  }

  /** Full multiaddrs, each ending in `/p2p/<peerId>`. */
  multiaddrs(): string[] {
    return this.libp2p.getMultiaddrs().map((ma) => ma.toString())
  }

  connectedBootstraps(): string[] {
    return this.bootstraps.connectedBootstraps()
  }

  /** RTT to a connected peer, in seconds. */
  async rtt(peer: PeerId, options: { signal?: AbortSignal } = {}): Promise<number> {
    return await probeRtt(this.libp2p, peer, options)
  }
}
