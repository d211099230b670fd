import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Libp2p, Logger, Stream } from '@libp2p/interface'
import {
  Announcer,
  answerDrain,
  answerStatus,
  DRAIN_PROTOCOL,
  type InstanceStatus,
  STATUS_PROTOCOL,
} from '@mtc/p2pnode'
import {
  HTTP_PROTOCOL,
  MAX_HTTP_STREAMS_PER_CONNECTION,
  PROVIDE_BACKOFF,
  PROVIDE_FIRST_INTERVAL_MS,
  PROVIDE_INTERVAL_MS,
  PROVIDE_TIMEOUT_MS,
  READINESS_INTERVAL_MS,
  SERVICE_CONNECT_TIMEOUT_MS,
  STOP_GRACE_MS,
  STOP_QUIET_MS,
} from './constants.ts'
import { HealthCheck, type HealthSettings } from './health-check.ts'
import type { EndpointCounts, ProxyMetrics } from './metrics.ts'
import { checkServiceReady, type ServiceTarget } from './service-readiness.ts'
import { StreamDuplex } from './stream-duplex.ts'
import { prefaceRefusal } from './stream-preface.ts'
import { endStream, relayStream } from './stream-relay.ts'

export interface ServiceEndpointInit {
  libp2p: Libp2p
  service: string
  /** The local service: `$PROXY_IP:$SERVICE_PORT`. */
  target: ServiceTarget
  metrics: ProxyMetrics
  log: Logger
  /** Whether the service is ready (checkServiceReady by default). */
  checkReady?: (target: ServiceTarget) => Promise<boolean>
  /** Readiness by an HTTP health check instead of a TCP connect. */
  health?: HealthSettings
  /** The image this instance runs (reported in its status). */
  imageId?: string
  /** Peer ID of the allocator allowed to make this instance drain (none: nobody). */
  drainFrom?: string
}

/** One stream being relayed, for idle and shutdown accounting. */
interface OpenStream {
  duplex: StreamDuplex
  /** The service's connection, once made. */
  socket?: Socket
  /** When a byte last moved either way, and which way. */
  lastByteAt: number
  lastDirection: 'in' | 'out' | 'none'
}

/**
 * The instance side of service mode: splices every `/mtc/http/2.0.0` stream from other
 * proxies to its own TCP connection to the local service (no HTTP parsing: the calling
 * gateway frames requests), after a one-line preface saying whether the service took the
 * connection; answers `/mtc/instance-status/1.0.0`; keeps the service announced in the
 * DHT; watches whether the local service is ready.
 */
export class ServiceEndpoint {
  private readonly init: ServiceEndpointInit
  private readonly log: Logger
  private readonly checkReady: (target: ServiceTarget) => Promise<boolean>
  private readonly controller = new AbortController()
  private loops: Array<Promise<void>> = []
  private ready = false
  /** When a byte was last relayed either way (warm streams held idle do not count). */
  private lastActive = performance.now()
  private readonly health?: HealthCheck
  private readonly announcer: Announcer
  /** Asked to drain by its allocator: reported in the status, so proxies stop choosing it. */
  private draining = false
  private started = false
  private stopping = false
  private readonly open = new Set<OpenStream>()
  private readonly counts: EndpointCounts = {
    streamsOpen: 0,
    bytesIn: 0,
    bytesOut: 0,
    refusals: 0,
    exchanges: 0,
  }

  constructor(init: ServiceEndpointInit) {
    this.init = init
    this.log = init.log
    this.checkReady = init.checkReady ?? checkServiceReady
    // Placed as soon as a DHT server is connected, again after 1 s, 2 s, 4 s... (a record
    // made while the DHT was still forming gets spread) up to every PROVIDE_INTERVAL_MS.
    this.announcer = new Announcer(init.libp2p, init.log, {
      intervalMs: PROVIDE_INTERVAL_MS,
      firstIntervalMs: PROVIDE_FIRST_INTERVAL_MS,
      retry: PROVIDE_BACKOFF,
      timeoutMs: PROVIDE_TIMEOUT_MS,
      wakeOnConnect: false,
    })
    if (init.health != null) {
      this.health = new HealthCheck({
        ...init.health,
        target: init.target,
        log: init.log,
        onFailure: () => init.metrics.healthCheckFailures.inc(),
      })
    }
  }

  /**
   * Streams with an exchange open, as far as a byte relay can tell: a request sent and not
   * yet answered, or an answer still flowing (bytes within STOP_QUIET_MS) — the service's
   * load, for the gateways' autoscalers and the allocator's reaper.
   */
  private exchangesOpen(now: number): number {
    let n = 0
    for (const s of this.open)
      if (s.lastDirection === 'in' || now - s.lastByteAt < STOP_QUIET_MS) n++
    return n
  }

  /** Time since a byte was last relayed either way (ms); 0 while an exchange is open. */
  quietMs(): number {
    const now = performance.now()
    return this.quietAt(now, this.exchangesOpen(now))
  }

  private quietAt(now: number, exchangesOpen: number): number {
    return exchangesOpen > 0 ? 0 : now - this.lastActive
  }

  /** Streams relayed now, and what went through them so far. */
  relayCounts(): EndpointCounts {
    return { ...this.counts, streamsOpen: this.open.size }
  }

  status(): InstanceStatus {
    const now = performance.now()
    const inFlight = this.exchangesOpen(now)
    const idle = this.quietAt(now, inFlight) / 1000
    const status: InstanceStatus = {
      service: this.init.service,
      idleSeconds: Math.floor(idle),
      // With a health path, only its checks decide (not "a connection was accepted").
      ready: this.health != null ? this.health.ready : this.ready,
      inFlight,
    }
    if (this.init.imageId != null) status.imageId = this.init.imageId
    if (this.draining) status.draining = true
    return status
  }

  async start(): Promise<void> {
    if (this.started) return
    this.started = true
    const { libp2p } = this.init
    this.setReady(await this.checkReady(this.init.target))
    await libp2p.handle(HTTP_PROTOCOL, (stream: Stream) => this.accept(stream), {
      maxInboundStreams: MAX_HTTP_STREAMS_PER_CONNECTION,
      maxOutboundStreams: MAX_HTTP_STREAMS_PER_CONNECTION,
    })
    await libp2p.handle(STATUS_PROTOCOL, (stream: Stream) => answerStatus(stream, this.status()))
    await libp2p.handle(DRAIN_PROTOCOL, (stream: Stream, conn) =>
      answerDrain(
        stream,
        conn.remotePeer,
        (caller) => this.init.drainFrom != null && caller.toString() === this.init.drainFrom,
        () => {
          if (!this.draining) this.log('draining: asked by allocator %p', conn.remotePeer)
          this.draining = true
        },
      ),
    )
    const signal = this.controller.signal
    this.loops = [this.watchReadiness(signal)]
    this.announcer.add('service', this.init.service)
    this.announcer.start()
    if (this.health != null) this.loops.push(this.health.run(signal))
  }

  /**
   * Stops taking streams; a stream open closes once quiet (its last bytes were an answer
   * and nothing moved for STOP_QUIET_MS: a warm stream between requests), the rest are
   * reset after STOP_GRACE_MS.
   */
  async stop(): Promise<void> {
    if (!this.started) return
    this.started = false
    this.stopping = true
    this.controller.abort()
    const { libp2p } = this.init
    await libp2p.unhandle([HTTP_PROTOCOL, STATUS_PROTOCOL, DRAIN_PROTOCOL])
    await Promise.allSettled([...this.loops, this.announcer.stop()])
    const deadline = performance.now() + STOP_GRACE_MS
    while (this.open.size > 0 && performance.now() < deadline) {
      const now = performance.now()
      for (const s of this.open) {
        // Closing the service's connection ends the stream cleanly (see relayStream).
        const quiet = s.lastDirection !== 'in' && now - s.lastByteAt >= STOP_QUIET_MS
        if (quiet && s.socket != null && !s.socket.destroyed) s.socket.destroy()
      }
      await sleep(Math.min(STOP_QUIET_MS, 100))
    }
    for (const s of this.open) s.duplex.destroy()
  }

  private accept(stream: Stream): void {
    const duplex = new StreamDuplex(stream, { allowHalfOpen: true })
    // Errors close the socket (see relayStream); a reset before the relay needs no more.
    duplex.on('error', (err) => this.log.trace('stream from the mesh cut: %s', err.message))
    if (this.stopping) {
      duplex.destroy()
      return
    }
    this.init.metrics.inboundStreams.inc()
    const entry: OpenStream = { duplex, lastByteAt: performance.now(), lastDirection: 'none' }
    this.open.add(entry)
    duplex.once('close', () => this.open.delete(entry))
    this.connectService().then(
      (socket) => {
        this.setReady(true)
        if (duplex.destroyed) {
          socket.destroy() // the caller went away while we connected
          return
        }
        entry.socket = socket
        relayStream(duplex, socket, (direction, bytes) => {
          const now = performance.now()
          // A run of bytes toward the service after its answer (or first) is a request.
          if (direction === 'in' && entry.lastDirection !== 'in') this.counts.exchanges++
          entry.lastByteAt = now
          entry.lastDirection = direction
          this.lastActive = now
          if (direction === 'in') this.counts.bytesIn += bytes
          else this.counts.bytesOut += bytes
        })
      },
      (err: Error) => {
        this.counts.refusals++
        this.setReady(false)
        endStream(duplex, prefaceRefusal(err.message))
      },
    )
  }

  /** A connection to the local service, or why not (refused, timed out). */
  private connectService(): Promise<Socket> {
    const { host, port } = this.init.target
    return new Promise((resolve, reject) => {
      const socket = connect({ host, port, allowHalfOpen: true })
      const timer = setTimeout(() => {
        socket.destroy()
        reject(
          new Error(`connect to ${host}:${port} timed out after ${SERVICE_CONNECT_TIMEOUT_MS} ms`),
        )
      }, SERVICE_CONNECT_TIMEOUT_MS)
      socket.once('connect', () => {
        clearTimeout(timer)
        socket.removeListener('error', onError)
        resolve(socket)
      })
      const onError = (err: Error): void => {
        clearTimeout(timer)
        reject(err)
      }
      socket.once('error', onError)
    })
  }

  private setReady(ready: boolean): void {
    if (ready !== this.ready) {
      const { host, port } = this.init.target
      this.log(
        'service %s at %s:%d is %s',
        this.init.service,
        host,
        port,
        ready ? 'ready' : 'NOT ready',
      )
    }
    this.ready = ready
  }

  private async watchReadiness(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await sleep(READINESS_INTERVAL_MS, undefined, { signal })
      } catch {
        return
      }
      this.setReady(await this.checkReady(this.init.target))
    }
  }
}
