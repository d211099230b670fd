/**
 * The floors of a gateway on this overlay: client-side processes that reach a service
 * proxy over the same libp2p stack as the mesh's proxies (MeshNode: TCP + PSK + Noise +
 * yamux; same daemon flags), each client connection on one `/mtc/http/2.0.0` stream of its
 * own for its whole life (the service proxy relays it to one connection to its service, as
 * for the mesh's gateway), with nothing of the gateway's routing around it:
 *
 * - `splice`: bytes relayed both ways unread: what any gateway on this stack could reach;
 * - `http`: Node's HTTP server in front, each request written to the stream as a minimal
 *   head (method, path, Host) and its answer followed with the proxy's own llhttp parser
 *   (ResponseParser) and sent through Node's ServerResponse: what a gateway built on
 *   Node's HTTP server could reach. GET and HEAD without a body only.
 *
 * The proxy bench measures both next to the mesh (bench/src/proxy.ts): the mesh's gap to
 * `http` is the gateway's own work (routing, instance choice, header rewriting, retries,
 * metrics), `http`'s gap to `splice` is Node's HTTP server.
 *
 *   node bench/src/floor-gateway.ts splice|http PORT SERVICE_PROXY_MULTIADDR SWARM_KEY_FILE
 *
 * Prints `listening on PORT` once the overlay connection is up. A stream the service proxy
 * refuses (its `-ERR...` preface) closes the client's connection. SIGTERM stops it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer, type Socket } from 'node:net'
import { execWithDaemonFlags } from '@mtc/p2pnode/node-flags'

execWithDaemonFlags()

const http = await import('node:http')
const { MeshNode, readSwarmKeyFile } = await import('@mtc/p2pnode')
const { HTTP_PROTOCOL, PrefaceReader, ResponseParser } = await import('@mtc/proxy')
const { multiaddr } = await import('@multiformats/multiaddr')

/** Response headers Node's ServerResponse sets itself for the client's connection. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding'])

const [mode, port, target, keyFile] = process.argv.slice(2)
if ((mode !== 'splice' && mode !== 'http') || port == null || target == null || keyFile == null) {
  process.stderr.write(
    'usage: floor-gateway splice|http PORT SERVICE_PROXY_MULTIADDR SWARM_KEY_FILE\n',
  )
  process.exit(2)
}
const node = await MeshNode.create({
  role: 'bench',
  version: '0',
  listen: [],
  bootstraps: [],
  psk: await readSwarmKeyFile(keyFile),
})
await node.start()
const connection = await node.libp2p.dial(multiaddr(target))

type Stream = Awaited<ReturnType<typeof node.libp2p.dialProtocol>>

/** A new stream to the service; `onBytes` gets the service's bytes after the `+OK` preface
 * (a refusal, or anything but a preface, aborts the stream: its 'close' follows). */
async function openStream(onBytes: (bytes: Uint8Array) => void): Promise<Stream> {
  const stream = await node.libp2p.dialProtocol(connection.remotePeer, HTTP_PROTOCOL)
  let preface: InstanceType<typeof PrefaceReader> | undefined = new PrefaceReader()
  stream.addEventListener('message', (evt) => {
    for (const chunk of evt.data instanceof Uint8Array ? [evt.data] : evt.data) {
      if (preface == null) {
        onBytes(chunk)
        continue
      }
      let got: ReturnType<typeof preface.push>
      try {
        got = preface.push(chunk)
      } catch (err) {
        stream.abort(err as Error)
        return
      }
      if (got == null) continue
      if (!got.preface.ok) {
        stream.abort(new Error(`the service proxy refused the stream: ${got.preface.message}`))
        return
      }
      preface = undefined
      if (got.rest.length > 0) onBytes(got.rest)
    }
  })
  return stream
}

/** One client connection ↔ one stream, with backpressure both ways; either side's end or
 * error ends both. */
async function splice(socket: Socket): Promise<void> {
  socket.setNoDelay(true)
  socket.pause()
  socket.on('error', () => {})
  let stream: Stream
  try {
    stream = await openStream((bytes) => {
      if (socket.write(bytes)) return
      stream.pause()
      socket.once('drain', () => stream.resume())
    })
  } catch {
    socket.destroy()
    return
  }
  stream.addEventListener('close', () => socket.destroy())
  socket.on('data', (bytes) => {
    if (stream.send(bytes)) return
    socket.pause()
    stream.addEventListener('drain', () => socket.resume(), { once: true })
  })
  socket.on('end', () => void stream.close().catch(() => {}))
  socket.on('close', () => {
    if (stream.status === 'open') stream.abort(new Error('client gone'))
  })
  socket.resume()
}

/** The stream of one client connection, and its parser of the service's answers. */
interface Upstream {
  stream: Stream
  parser: InstanceType<typeof ResponseParser>
  /** The request before this connection's next one is over. */
  turn: Promise<void>
}

const upstreams = new WeakMap<Socket, Promise<Upstream>>()

function upstreamOf(socket: Socket): Promise<Upstream> {
  let up = upstreams.get(socket)
  if (up == null) {
    const parser = new ResponseParser()
    up = openStream((bytes) => {
      try {
        parser.push(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength))
      } catch {
        socket.destroy()
      }
    }).then((stream) => {
      stream.addEventListener('close', () => socket.destroy())
      socket.once('close', () => {
        if (stream.status === 'open') stream.abort(new Error('client gone'))
      })
      return { stream, parser, turn: Promise.resolve() }
    })
    up.catch(() => socket.destroy())
    upstreams.set(socket, up)
  }
  return up
}

/** One request: its minimal head into the connection's stream, the answer back through
 * `res` as it arrives; the connection's next request waits for the end of this one. */
async function relay(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const method = req.method ?? 'GET'
  const body = req.headers['content-length'] != null || req.headers['transfer-encoding'] != null
  if ((method !== 'GET' && method !== 'HEAD') || body) {
    res.writeHead(400).end('floor-gateway: GET and HEAD without a body only\n')
    return
  }
  req.resume()
  const up = await upstreamOf(req.socket)
  const previous = up.turn
  const { promise: done, resolve } = Promise.withResolvers<void>()
  up.turn = done
  await previous
  up.parser.expect(method, {
    onHead: (h) => {
      const headers: string[] = []
      for (let i = 0; i < h.rawHeaders.length; i += 2) {
        if (HOP_BY_HOP.has(h.rawHeaders[i].toLowerCase())) continue
        headers.push(h.rawHeaders[i], h.rawHeaders[i + 1])
      }
      res.writeHead(h.status, h.reason, headers)
    },
    onBody: (chunk) => {
      res.write(chunk)
    },
    onComplete: () => {
      res.end()
      resolve()
    },
  })
  up.stream.send(
    Buffer.from(
      `${method} ${req.url} HTTP/1.1\r\nHost: ${req.headers.host ?? ''}\r\n\r\n`,
      'latin1',
    ),
  )
}

const server =
  mode === 'splice'
    ? createServer({ noDelay: true }, (socket) => void splice(socket))
    : http.createServer((req, res) => void relay(req, res).catch(() => res.destroy()))
server.listen(Number(port), '127.0.0.1', () => process.stdout.write(`listening on ${port}\n`))
process.once('SIGTERM', () => {
  server.close()
  void node.stop().then(() => process.exit(0))
})
