import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from '@libp2p/interface'
import { http } from '@mtc/p2pnode'
import {
  CLIENT_IDLE_TIMEOUT_MS,
  CLIENT_KEEP_ALIVE_TIMEOUT_MS,
  CONNECTIONS_CHECK_INTERVAL_MS,
  DEFAULT_HEADERS_TIMEOUT_MS,
  GATEWAY_HOST,
  MAX_CONCURRENT_REQUESTS,
  MAX_HEADER_BYTES,
} from './constants.ts'
import { ProxyError, type ProxyErrorCode, rawErrorResponse, sendError } from './errors.ts'
import type { Forwarder } from './forwarder.ts'
import type { UpgradeRequest } from './mesh-exchange.ts'
import type { ProxyMetrics } from './metrics.ts'
import { type Framing, requestFraming } from './request-framing.ts'
import { parseGatewayTarget } from './service-name.ts'

export interface GatewayInit {
  port: number
  forwarder: Forwarder
  metrics: ProxyMetrics
  log: Logger
  headersTimeoutMs?: number
}

/**
 * The HTTP entry of a host: `/<service>/<rest>` on 127.0.0.1:PORT goes to an instance
 * of `<service>` as `/<rest>`. Malformed requests, oversized heads and slow clients are
 * answered with the error table's codes; the gateway keeps serving everyone else.
 */
export class Gateway {
  private readonly init: GatewayInit
  private readonly log: Logger
  private server?: Server
  private inFlight = 0
  /** When a request last began or ended. */
  private lastActive = performance.now()
  private stopping = false
  private idle?: PromiseWithResolvers<void>
  /** Connections whose framing was refused: anything pipelined behind is not forwarded. */
  private readonly refused = new WeakSet<Duplex>()
  /** Client connections taken out of the HTTP server for an upgrade. */
  private readonly upgraded = new Set<Duplex>()

  constructor(init: GatewayInit) {
    this.init = init
    this.log = init.log
    init.metrics.setGatewaySource(() => ({ inFlight: this.inFlight }))
  }

  async start(): Promise<void> {
    const headersTimeout = this.init.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS
    const server = http.createServer(
      {
        maxHeaderSize: MAX_HEADER_BYTES,
        headersTimeout,
        // Bodies of any size and duration: the idle timeout below bounds stalls.
        requestTimeout: 0,
        keepAliveTimeout: CLIENT_KEEP_ALIVE_TIMEOUT_MS,
        connectionsCheckingInterval: Math.min(CONNECTIONS_CHECK_INTERVAL_MS, headersTimeout),
      },
      (req, res) => this.handle(req, res),
    )
    server.timeout = CLIENT_IDLE_TIMEOUT_MS
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
      this.onClientError(err, socket)
    })
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      this.handleUpgrade(req, socket, head)
    })
    server.on('connect', (_req: IncomingMessage, socket: Duplex) => {
      this.answerRaw(socket, 'ERR_NOT_SUPPORTED')
    })
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    server.once('error', reject)
    server.listen(this.init.port, GATEWAY_HOST, () => resolve())
    await promise
    server.off('error', reject)
    this.server = server
  }

  /** The bound port (useful with port 0). */
  port(): number {
    return (this.server?.address() as AddressInfo | null)?.port ?? 0
  }

  /** Time since a request last began or ended (ms); 0 while one is in flight or a
   * connection is upgraded (its bytes are not counted here). */
  quietMs(): number {
    if (this.inFlight > 0 || this.upgraded.size > 0) return 0
    return performance.now() - this.lastActive
  }

  /** Stops accepting, lets requests in flight finish (bounded by the caller), then closes. */
  async stop(): Promise<void> {
    const server = this.server
    if (server == null) return
    this.server = undefined
    this.stopping = true
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    server.closeIdleConnections()
    if (this.inFlight > 0) {
      this.idle = Promise.withResolvers<void>()
      await this.idle.promise
    }
    server.closeAllConnections()
    for (const socket of this.upgraded) socket.destroy()
    await closed
  }

  /**
   * A request asking to switch protocols (WebSocket...): forwarded like any other, with
   * its Upgrade; a 101 answer makes the client's connection and the mesh stream one byte
   * pipe (mesh-exchange.ts), any other answer ends the connection after it.
   */
  private handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    socket.on('error', (err) => this.log.trace('upgraded connection: %s', err.message))
    this.upgraded.add(socket)
    socket.once('close', () => this.upgraded.delete(socket))
    const res = new http.ServerResponse(req)
    res.shouldKeepAlive = false
    res.assignSocket(socket as never)
    res.once('finish', () => socket.end())
    this.handle(req, res, { socket, head })
  }

  private handle(req: IncomingMessage, res: ServerResponse, upgrade?: UpgradeRequest): void {
    // A client that goes away mid-body (or sends a malformed chunk) destroys `req` with an
    // error whatever stage the request is at: the gateway owns it for its whole life.
    req.on('error', (err) =>
      this.log.trace('%s %s: request cut: %s', req.method, req.url, err.message),
    )
    if (this.refused.has(req.socket)) return // closed once the 400 is out
    const started = performance.now()
    let service = ''
    res.once('close', () => {
      this.init.metrics.requests.inc({ service, code: String(res.statusCode) })
      this.init.metrics.duration.observe({ service }, (performance.now() - started) / 1000)
    })
    if (this.stopping) {
      res.shouldKeepAlive = false
      sendError(res, new ProxyError('ERR_SHUTTING_DOWN'))
      return
    }
    if (this.inFlight >= MAX_CONCURRENT_REQUESTS) {
      sendError(res, new ProxyError('ERR_OVERLOADED'))
      return
    }
    let target: { service: string; path: string }
    let framing: Framing
    try {
      // Framing first, from the message as parsed: nothing dropped later may change it.
      framing = requestFraming(req)
      target = parseGatewayTarget(req.url ?? '')
    } catch (err) {
      // Where this message ends is unknown: nothing more is read from this connection.
      if ((err as ProxyError).code === 'ERR_BAD_FRAMING') {
        res.shouldKeepAlive = false
        this.refused.add(req.socket)
      }
      sendError(res, err as ProxyError)
      return
    }
    this.inFlight++
    this.lastActive = performance.now()
    service = target.service
    this.init.forwarder
      .forward(target.service, target.path, req, res, framing, upgrade)
      .catch((err: Error) => {
        if (err instanceof ProxyError) {
          // Unknown names stay out of the labels: anyone can make up names.
          if (err.code === 'ERR_UNKNOWN_SERVICE') service = ''
          sendError(res, err)
          return
        }
        this.log.error('%s %s failed: %s', req.method, req.url, err.message)
        sendError(res, new ProxyError('ERR_INSTANCE_UNREACHABLE', err.message))
      })
      .finally(() => {
        this.inFlight--
        this.lastActive = performance.now()
        if (this.inFlight === 0) this.idle?.resolve()
      })
  }

  private onClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
    const code: ProxyErrorCode =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? 'ERR_HEADERS_TOO_LARGE'
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? 'ERR_REQUEST_TIMEOUT'
          : 'ERR_BAD_REQUEST'
    this.log.trace('client error %s: %s', err.code, err.message)
    if (err.code === 'ECONNRESET' || !socket.writable) {
      socket.destroy()
      return
    }
    // The parser failed on bytes after a request whose answer is under way (e.g. the body
    // of a request refused for its framing): that answer is the last on this connection.
    // A body that breaks off mid-request cuts that request (and its answer).
    const answering = (socket as { _httpMessage?: ServerResponse | null })._httpMessage
    if (answering != null) {
      if (this.refused.has(socket)) return // its 400 is on its way, then the close
      if (!answering.req.complete || answering.writableFinished) socket.destroy()
      else answering.shouldKeepAlive = false
      return
    }
    this.init.metrics.requests.inc({ service: '', code: String(new ProxyError(code).status) })
    this.answerRaw(socket, code)
  }

  private answerRaw(socket: Duplex, code: ProxyErrorCode): void {
    socket.end(rawErrorResponse(new ProxyError(code)))
    socket.once('finish', () => socket.destroy())
  }
}
