import { type AddressInfo, createServer, type Server, type Socket } from 'node:net'
import type { Logger } from '@libp2p/interface'
import { ClientConnection, type ConnectionHandler } from './client-connection.ts'
import type { ClientResponse } from './client-response.ts'
import {
  CLIENT_KEEP_ALIVE_TIMEOUT_MS,
  CONNECTIONS_CHECK_INTERVAL_MS,
  DEFAULT_HEADERS_TIMEOUT_MS,
  GATEWAY_HOST,
  MAX_CONCURRENT_REQUESTS,
  MAX_HEADER_BYTES,
} from './constants.ts'
import { ProxyError, type ProxyErrorCode, sendError } from './errors.ts'
import type { Forwarder } from './forwarder.ts'
import type { GatewayRequest } from './gateway-request.ts'
import type { UpgradeRequest } from './mesh-exchange.ts'
import type { ProxyMetrics } from './metrics.ts'
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
 * of `<service>` as `/<rest>`. Each client connection is read with llhttp
 * (client-connection.ts); malformed requests, oversized heads and slow clients are
 * answered with the error table's codes; the gateway keeps serving everyone else.
 */
export class Gateway implements ConnectionHandler {
  private readonly init: GatewayInit
  private readonly log: Logger
  private readonly headersTimeoutMs: number
  private server?: Server
  private readonly connections = new Set<ClientConnection>()
  private checker?: NodeJS.Timeout
  private inFlight = 0
  /** When a request last began or ended. */
  private lastActive = performance.now()
  private stopping = false
  private idle?: PromiseWithResolvers<void>
  /** Client connections that asked for an upgrade: after a 101, byte pipes. */
  private readonly upgraded = new Set<Socket>()

  constructor(init: GatewayInit) {
    this.init = init
    this.log = init.log
    this.headersTimeoutMs = init.headersTimeoutMs ?? DEFAULT_HEADERS_TIMEOUT_MS
    init.metrics.setGatewaySource(() => ({ inFlight: this.inFlight }))
  }

  async start(): Promise<void> {
    // allowHalfOpen: the connection decides what a client's end means (a head cut short
    // still gets its 400).
    const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
      if (this.stopping) {
        socket.destroy()
        return
      }
      this.connections.add(new ClientConnection(socket, this, MAX_HEADER_BYTES))
    })
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    server.once('error', reject)
    server.listen(this.init.port, GATEWAY_HOST, () => resolve())
    await promise
    server.off('error', reject)
    this.server = server
    // Head and keep-alive timeouts, for every connection at once (one timer, as Node's
    // server does), enforced within the interval.
    const interval = Math.min(CONNECTIONS_CHECK_INTERVAL_MS, this.headersTimeoutMs)
    this.checker = setInterval(() => {
      const now = performance.now()
      for (const conn of this.connections)
        conn.checkTimeouts(now, this.headersTimeoutMs, CLIENT_KEEP_ALIVE_TIMEOUT_MS)
    }, interval)
    this.checker.unref()
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
    clearInterval(this.checker)
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    for (const conn of this.connections) conn.closeIfIdle()
    if (this.inFlight > 0) {
      this.idle = Promise.withResolvers<void>()
      await this.idle.promise
    }
    for (const conn of this.connections) conn.socket.destroy()
    for (const socket of this.upgraded) socket.destroy()
    await closed
  }

  /** ConnectionHandler: one request. */
  request(req: GatewayRequest, res: ClientResponse, upgrade?: UpgradeRequest): void {
    if (upgrade != null) {
      // After a 101 the socket leaves its connection: tracked here until it closes.
      const socket = upgrade.socket as Socket
      this.upgraded.add(socket)
      socket.once('close', () => this.upgraded.delete(socket))
    }
    const started = performance.now()
    let service = ''
    res.once('close', () => {
      this.init.metrics.requests.inc({ service, code: String(res.statusCode) })
      this.init.metrics.duration.observe({ service }, (performance.now() - started) / 1000)
    })
    if (req.method === 'CONNECT') {
      res.shouldKeepAlive = false
      sendError(res, new ProxyError('ERR_NOT_SUPPORTED'))
      return
    }
    if (this.stopping) {
      res.shouldKeepAlive = false
      sendError(res, new ProxyError('ERR_SHUTTING_DOWN'))
      return
    }
    if (this.inFlight >= MAX_CONCURRENT_REQUESTS) {
      sendError(res, new ProxyError('ERR_OVERLOADED'))
      return
    }
    const framing = req.framing
    let target: { service: string; path: string }
    try {
      // Where a message whose framing was refused ends is unknown: its connection ends
      // after the answer (client-connection.ts reads nothing more from it).
      if (framing == null) throw req.framingError
      target = parseGatewayTarget(req.url)
    } catch (err) {
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

  /** ConnectionHandler: bytes that were not a request (answered by the connection). */
  clientError(code: ProxyErrorCode, detail: string): void {
    this.log.trace('client error %s: %s', code, detail)
    this.init.metrics.requests.inc({ service: '', code: String(new ProxyError(code).status) })
  }

  /** ConnectionHandler: a connection closed or became a byte pipe. */
  closed(conn: ClientConnection): void {
    this.connections.delete(conn)
  }
}
