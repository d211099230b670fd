import type { Agent, IncomingMessage, Server, ServerResponse } from 'node:http'
import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Libp2p, Logger, Stream } from '@libp2p/interface'
import {
  answerDrain,
  answerStatus,
  Backoff,
  DRAIN_PROTOCOL,
  http,
  type InstanceStatus,
  provide,
  STATUS_PROTOCOL,
} from '@mtc/p2pnode'
import {
  CONNECTIONS_CHECK_INTERVAL_MS,
  DEFAULT_HEADERS_TIMEOUT_MS,
  DEFAULT_UPSTREAM_TIMEOUT_MS,
  HTTP_PROTOCOL,
  INSTANCE_KEEP_ALIVE_TIMEOUT_MS,
  LOCAL_IDLE_SOCKET_TIMEOUT_MS,
  MAX_HEADER_BYTES,
  MAX_HTTP_STREAMS_PER_CONNECTION,
  MAX_IDLE_LOCAL_SOCKETS,
  PROVIDE_BACKOFF,
  PROVIDE_FIRST_INTERVAL_MS,
  PROVIDE_INTERVAL_MS,
  PROVIDE_TIMEOUT_MS,
  READINESS_INTERVAL_MS,
  READINESS_TIMEOUT_MS,
} from './constants.ts'
import { ERROR_HEADER, ProxyError, sendError } from './errors.ts'
import { HealthCheck, type HealthSettings } from './health-check.ts'
import { endToEndHeaders, relayRequestHeaders } from './http-headers.ts'
import type { ProxyMetrics } from './metrics.ts'
import { flushHeadSoon, pipe } from './pipe.ts'
import { type Framing, requestFraming } from './request-framing.ts'
import { StreamDuplex } from './stream-duplex.ts'

export interface ServiceEndpointInit {
  libp2p: Libp2p
  service: string
  /** The local service: `$PROXY_IP:$SERVICE_PORT`. */
  target: { host: string; port: number }
  metrics: ProxyMetrics
  log: Logger
  headersTimeoutMs?: number
  upstreamTimeoutMs?: number
  /** Readiness by an HTTP health check instead of a TCP connect. */
  health?: HealthSettings
  /** The image this instance runs (reported in its status). */
  imageId?: string
  /** Peer ID of the allocator allowed to make this instance drain (none: nobody). */
  drainFrom?: string
}

/** Only proxies speak the error header: a service's own is dropped. */
const DROP_FROM_SERVICE = new Set([ERROR_HEADER])

/**
 * The instance side of service mode: accepts HTTP over `/mtc/http/1.0.0` streams from
 * other proxies (each stream handed to a Node HTTP server as its connection) and
 * forwards every request to the local service over a keep-alive pool; answers
 * `/mtc/instance-status/1.0.0`; keeps the service announced in the DHT; watches
 * whether the local service accepts connections.
 */
export class ServiceEndpoint {
  private readonly init: ServiceEndpointInit
  private readonly log: Logger
  private readonly agent: Agent
  private readonly server: Server
  private readonly controller = new AbortController()
  private loops: Array<Promise<void>> = []
  private ready = false
  private readonly health?: HealthCheck
  /** Asked to drain by its allocator: reported in the status, so proxies stop choosing it. */
  private draining = false
  private inFlight = 0
  private lastActive = performance.now()
  private started = false
  /** Streams whose framing was refused: anything pipelined behind is not forwarded. */
  private readonly refused = new WeakSet<object>()

  constructor(init: ServiceEndpointInit) {
    this.init = init
    this.log = init.log
    this.agent = new http.Agent({
      keepAlive: true,
      maxFreeSockets: MAX_IDLE_LOCAL_SOCKETS,
      timeout: LOCAL_IDLE_SOCKET_TIMEOUT_MS,
      scheduling: 'lifo',
    })
    if (init.health != null) {
      this.health = new HealthCheck({
        ...init.health,
        target: init.target,
        log: init.log,
        onFailure: () => init.metrics.healthCheckFailures.inc(),
      })
    }
    const headersTimeout = init.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS
    this.server = http.createServer(
      {
        // The gateway adds a few forwarding headers to what it accepted.
        maxHeaderSize: 2 * MAX_HEADER_BYTES,
        headersTimeout,
        requestTimeout: 0,
        keepAliveTimeout: INSTANCE_KEEP_ALIVE_TIMEOUT_MS,
        connectionsCheckingInterval: Math.min(CONNECTIONS_CHECK_INTERVAL_MS, headersTimeout),
      },
      (req, res) => this.handle(req, res),
    )
  }

  /** Requests from the mesh being forwarded now. */
  get requestsInFlight(): number {
    return this.inFlight
  }

  status(): InstanceStatus {
    const idle = this.inFlight > 0 ? 0 : (performance.now() - this.lastActive) / 1000
    const status: InstanceStatus = {
      service: this.init.service,
      idleSeconds: Math.floor(idle),
      // With a health path, only its checks decide (not "a connection was accepted").
      ready: this.health != null ? this.health.ready : this.ready,
    }
    if (this.init.imageId != null) status.imageId = this.init.imageId
    if (this.draining) status.draining = true
    return status
  }

  async start(): Promise<void> {
    if (this.started) return
    this.started = true
    const { libp2p } = this.init
    this.ready = await this.checkReady()
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
    this.loops = [this.watchReadiness(signal), this.announce(signal)]
    if (this.health != null) this.loops.push(this.health.run(signal))
  }

  async stop(): Promise<void> {
    if (!this.started) return
    this.started = false
    this.controller.abort()
    const { libp2p } = this.init
    await libp2p.unhandle([HTTP_PROTOCOL, STATUS_PROTOCOL, DRAIN_PROTOCOL])
    await Promise.allSettled(this.loops)
    // Requests in flight finish; idle mesh streams close now.
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()))
    this.server.closeIdleConnections()
    await closed
    this.agent.destroy()
  }

  private accept(stream: Stream): void {
    this.init.metrics.inboundStreams.inc()
    this.server.emit('connection', new StreamDuplex(stream, { allowHalfOpen: false }))
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    // A stream reset mid-body destroys `req` with an error, before, during or after its
    // body is piped: owned here for its whole life (see Gateway).
    req.on('error', (err) => this.log.trace('request from the mesh cut: %s', err.message))
    if (this.refused.has(req.socket)) return // closed once the 400 is out
    this.inFlight++
    res.once('close', () => {
      this.inFlight--
      this.lastActive = performance.now()
      this.init.metrics.inboundRequests.inc({ code: String(res.statusCode) })
    })
    // The same framing rules as the gateway's for what arrives from the mesh: another
    // peer's gateway may not be ours.
    let framing: Framing
    try {
      framing = requestFraming(req)
    } catch (err) {
      res.shouldKeepAlive = false
      this.refused.add(req.socket)
      sendError(res, err as ProxyError)
      return
    }
    const { host, port } = this.init.target
    const timeoutMs = this.init.upstreamTimeoutMs ?? DEFAULT_UPSTREAM_TIMEOUT_MS
    let connected = false
    let responded = false
    const upstream = http.request({
      agent: this.agent,
      host,
      port,
      method: req.method,
      path: req.url,
      headers: relayRequestHeaders(req, framing),
    })
    const timer = setTimeout(() => {
      upstream.destroy(new ProxyError('ERR_SERVICE_TIMEOUT', `no answer within ${timeoutMs} ms`))
    }, timeoutMs)
    res.once('close', () => {
      clearTimeout(timer)
      if (!res.writableFinished) upstream.destroy()
    })
    // The body flows once the service accepted the connection: a refused connection
    // consumed nothing, and the calling gateway may send the request elsewhere.
    upstream.once('socket', (socket: Socket) => {
      const go = (): void => {
        connected = true
        pipe(req, upstream, () => {})
      }
      if (socket.connecting) socket.once('connect', go)
      else go()
    })
    upstream.on('response', (ures) => {
      responded = true
      clearTimeout(timer)
      this.ready = true
      res.writeHead(
        ures.statusCode ?? 502,
        ures.statusMessage,
        endToEndHeaders(ures.rawHeaders, DROP_FROM_SERVICE),
      )
      pipe(ures, res, (err) => {
        if (err != null) this.log.trace('response cut: %s', err.message)
      })
      flushHeadSoon(ures, res)
    })
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer)
      if (responded) return
      if (err instanceof ProxyError) {
        sendError(res, err)
        return
      }
      if (!connected) {
        if (this.ready)
          this.log('service at %s:%d refuses connections: %s', host, port, err.message)
        this.ready = false
        sendError(res, new ProxyError('ERR_SERVICE_UNREACHABLE', err.message))
        return
      }
      sendError(res, new ProxyError('ERR_SERVICE_RESET', err.message))
    })
  }

  /** Whether the local service accepts a TCP connection now. */
  private checkReady(): Promise<boolean> {
    const { host, port } = this.init.target
    return new Promise((resolve) => {
      const socket = connect({ host, port, timeout: READINESS_TIMEOUT_MS })
      const done = (ok: boolean): void => {
        socket.destroy()
        resolve(ok)
      }
      socket.once('connect', () => done(true))
      socket.once('error', () => done(false))
      socket.once('timeout', () => done(false))
    })
  }

  private async watchReadiness(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        await sleep(READINESS_INTERVAL_MS, undefined, { signal })
      } catch {
        return
      }
      const ready = await this.checkReady()
      if (ready !== this.ready) {
        this.log('service %s is %s', this.init.service, ready ? 'ready' : 'NOT ready')
      }
      this.ready = ready
    }
  }

  /**
   * Keeps the service's provider record in the DHT: announced as soon as a DHT server is
   * connected (until then provide() fails at once and the loop backs off), again after
   * 1 s, 2 s, 4 s... (so a record made while the DHT was still forming gets spread) up
   * to every PROVIDE_INTERVAL_MS; failures back off.
   */
  private async announce(signal: AbortSignal): Promise<void> {
    const { libp2p, service } = this.init
    const backoff = new Backoff(PROVIDE_BACKOFF)
    let interval = PROVIDE_FIRST_INTERVAL_MS
    let announced = false
    while (!signal.aborted) {
      try {
        await provide(libp2p, 'service', service, {
          signal: AbortSignal.any([AbortSignal.timeout(PROVIDE_TIMEOUT_MS), signal]),
        })
        if (!announced) this.log('service %s announced in the DHT', service)
        announced = true
        backoff.reset()
        await sleep(interval, undefined, { signal })
        interval = Math.min(interval * 2, PROVIDE_INTERVAL_MS)
      } catch (err) {
        if (signal.aborted) return
        this.log.trace('announcing %s failed: %s', service, (err as Error).message)
        if (!(await backoff.wait(signal))) return
      }
    }
  }
}
