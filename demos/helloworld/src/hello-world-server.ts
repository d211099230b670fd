import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { pipeline } from 'node:stream'

/**
 * hello-world-server: a tiny HTTP service for the mesh demos and tests.
 *
 *   GET  /                       "Hello, world"
 *   POST /echo                   the request body streamed back
 *   GET  /slow?ms=100&chunks=10  `chunks` lines, one every `ms` (headers at once)
 *   GET  /status/:code           an empty answer with that status code
 *   GET  /bytes/:n               n bytes with a Content-Length, streamed (n > 1 GiB: 400)
 *   ANY  /inspect                {method, url, headers} of the request as JSON
 *   GET  /healthz                200 "ok" while healthy, else 503 (health checks)
 *   POST /healthz/fail           from now on /healthz answers 503
 *
 * Port: first argument or SERVICE_PORT; host: SERVICE_HOST (default 0.0.0.0).
 * INSTANCE_ID, when set, is sent back in an X-Instance header (to see who answered).
 * HELLO_TEXT replaces "Hello, world" (to tell two versions of an image apart);
 * HEALTH_FAIL=1 makes /healthz fail from the start (an image that never gets healthy).
 */
let healthy = process.env.HEALTH_FAIL !== '1'
const MAX_SLOW_CHUNKS = 10_000
const MAX_SLOW_MS = 60_000
/** /bytes/:n serves at most this much: enough for bulk-transfer benchmarks. */
const MAX_BYTES = 1024 ** 3
/** /bytes/:n writes one shared chunk at a time, so a large answer costs no memory. */
const BYTES_CHUNK = Buffer.alloc(64 * 1024, 'x')

/** Writes `n` bytes to `res` in BYTES_CHUNK pieces, waiting for the socket to drain. */
function sendBytes(res: ServerResponse, n: number): void {
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': n })
  let left = n
  const more = (): void => {
    while (left > 0) {
      const piece = left >= BYTES_CHUNK.length ? BYTES_CHUNK : BYTES_CHUNK.subarray(0, left)
      left -= piece.length
      if (!res.write(piece)) {
        res.once('drain', more)
        return
      }
    }
    res.end()
  }
  more()
}

function handle(req: IncomingMessage, res: ServerResponse, instance: string | undefined): void {
  if (instance != null) res.setHeader('x-instance', instance)
  const url = new URL(req.url ?? '/', 'http://localhost')
  const status = /^\/status\/(\d{3})$/.exec(url.pathname)
  const bytes = /^\/bytes\/(\d{1,10})$/.exec(url.pathname)
  if (url.pathname === '/' && (req.method === 'GET' || req.method === 'HEAD')) {
    const body = `${process.env.HELLO_TEXT ?? 'Hello, world'}\n`
    res.writeHead(200, {
      'content-type': 'text/plain; charset=utf-8',
      'content-length': Buffer.byteLength(body),
    })
    res.end(body)
  } else if (url.pathname === '/echo' && req.method === 'POST') {
    const headers: Record<string, string> = {
      'content-type': req.headers['content-type'] ?? 'application/octet-stream',
    }
    if (req.headers['content-length'] != null)
      headers['content-length'] = req.headers['content-length']
    res.writeHead(200, headers)
    pipeline(req, res, () => {})
  } else if (url.pathname === '/slow' && req.method === 'GET') {
    const ms = Math.min(Number(url.searchParams.get('ms') ?? 100) || 0, MAX_SLOW_MS)
    const chunks = Math.min(Number(url.searchParams.get('chunks') ?? 10) || 1, MAX_SLOW_CHUNKS)
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' })
    res.flushHeaders()
    let i = 0
    const timer = setInterval(() => {
      i++
      res.write(`chunk ${i} at ${Date.now()}\n`)
      if (i >= chunks) {
        clearInterval(timer)
        res.end()
      }
    }, ms)
    res.on('close', () => clearInterval(timer))
  } else if (status != null && Number(status[1]) >= 200 && Number(status[1]) <= 599) {
    res.writeHead(Number(status[1]), { 'content-type': 'text/plain; charset=utf-8' })
    res.end(`status ${status[1]}\n`)
  } else if (bytes != null && req.method === 'GET') {
    if (Number(bytes[1]) <= MAX_BYTES) sendBytes(res, Number(bytes[1]))
    else {
      res.writeHead(400, { 'content-type': 'text/plain; charset=utf-8' })
      res.end(`at most ${MAX_BYTES} bytes\n`)
    }
  } else if (url.pathname === '/healthz' && req.method === 'GET') {
    res.writeHead(healthy ? 200 : 503, { 'content-type': 'text/plain; charset=utf-8' })
    res.end(healthy ? 'ok\n' : 'failing\n')
  } else if (url.pathname === '/healthz/fail' && req.method === 'POST') {
    healthy = false
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' })
    res.end('/healthz fails from now on\n')
  } else if (url.pathname === '/inspect') {
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }))
    })
  } else {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' })
    res.end('not found\n')
  }
}

function main(): void {
  const portText = process.argv[2] ?? process.env.SERVICE_PORT
  const port = Number(portText)
  if (portText == null || !/^\d+$/.test(portText) || port < 1 || port > 65535) {
    process.stderr.write('usage: hello-world-server PORT (or SERVICE_PORT=PORT)\n')
    process.exitCode = 2
    return
  }
  const instance = process.env.INSTANCE_ID
  const server = createServer((req, res) => handle(req, res, instance))
  server.listen(port, process.env.SERVICE_HOST ?? '0.0.0.0', () => {
    process.stdout.write(`hello-world-server listening on ${port}\n`)
  })
  const stop = (): void => {
    server.close()
    server.closeIdleConnections()
    setTimeout(() => process.exit(0), 2000).unref()
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

main()
