import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Registry } from 'prom-client'
import { METRICS_HEADERS_TIMEOUT_MS } from './constants.ts'
import { http } from './node-http.ts'

export type RouteHandler = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>

export interface MetricsServerInit {
  host: string
  port: number
  registry: Registry
  /** Answers /healthz: 200 while true, 503 otherwise (e.g. during shutdown). */
  healthy: () => boolean
  /** Extra GET routes by exact path, e.g. `/peers`. */
  routes?: Record<string, RouteHandler>
}

/** The Prometheus and liveness endpoint of a daemon: `/metrics`, `/healthz`, extra routes. */
export class MetricsServer {
  private readonly init: MetricsServerInit
  private server?: Server

  constructor(init: MetricsServerInit) {
    this.init = init
  }

  async start(): Promise<void> {
    const server = http.createServer((req, res) => {
      this.handle(req, res).catch((err: Error) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' })
        res.end(`internal error: ${err.message}\n`)
      })
    })
    server.headersTimeout = METRICS_HEADERS_TIMEOUT_MS
    server.requestTimeout = METRICS_HEADERS_TIMEOUT_MS
    const { promise, resolve, reject } = Promise.withResolvers<void>()
    server.once('error', reject)
    server.listen(this.init.port, this.init.host, () => resolve())
    await promise
    server.off('error', reject)
    this.server = server
  }

  /** The bound address, e.g. `127.0.0.1:9100`. */
  address(): string {
    const a = this.server?.address() as AddressInfo | null | undefined
    if (a == null) return ''
    return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`
  }

  /** The bound port (the one asked for, or the kernel's pick for port 0). */
  port(): number {
    return (this.server?.address() as AddressInfo | null | undefined)?.port ?? 0
  }

  async stop(): Promise<void> {
    const server = this.server
    if (server == null) return
    this.server = undefined
    const closed = new Promise<void>((resolve) => server.close(() => resolve()))
    server.closeAllConnections()
    await closed
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' })
      res.end('method not allowed\n')
      return
    }
    if (path === '/metrics') {
      const body = await this.init.registry.metrics()
      res.writeHead(200, { 'content-type': this.init.registry.contentType })
      res.end(body)
      return
    }
    if (path === '/healthz') {
      const ok = this.init.healthy()
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' })
      res.end(ok ? 'ok\n' : 'stopping\n')
      return
    }
    const route = this.init.routes?.[path]
    if (route != null) {
      await route(req, res)
      return
    }
    res.writeHead(404, { 'content-type': 'text/plain' })
    res.end('not found\n')
  }
}

/** Sends `value` as a JSON response. */
export function sendJson(res: ServerResponse, value: unknown, status = 200): void {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(`${JSON.stringify(value, null, 2)}\n`)
}
