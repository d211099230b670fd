/**
 * The floor of any gateway on this overlay: a client-side process that splices each TCP
 * connection it accepts to one `/mtc/http/2.0.0` stream to a service proxy, byte for byte,
 * without reading a byte of HTTP (the service proxy relays the stream to one connection
 * to its service, as it does for the mesh's gateway). Same libp2p stack as the proxies
 * (MeshNode: TCP + PSK + Noise + yamux), same daemon flags. What the mesh loses against
 * it is the gateway's HTTP work; what it loses against direct is the stack's. The proxy
 * bench measures it next to the mesh (bench/src/proxy.ts).
 *
 *   node bench/src/splice-gateway.ts PORT SERVICE_PROXY_MULTIADDR SWARM_KEY_FILE
 *
 * Prints `listening on PORT` once the overlay connection is up. A stream the service
 * proxy refuses (its `-ERR...` preface) closes the client's connection. SIGTERM stops it.
 */
import { createServer, type Socket } from 'node:net'
import { execWithDaemonFlags } from '@mtc/p2pnode/node-flags'

execWithDaemonFlags()

const { MeshNode, readSwarmKeyFile } = await import('@mtc/p2pnode')
const { multiaddr } = await import('@multiformats/multiaddr')

/** The service proxy's stream protocol (packages/proxy/src/constants.ts) and its preface. */
const HTTP_PROTOCOL = '/mtc/http/2.0.0'
const PREFACE_OK = Buffer.from('+OK\n')

const [port, target, keyFile] = process.argv.slice(2)
if (port == null || target == null || keyFile == null) {
  process.stderr.write('usage: splice-gateway PORT SERVICE_PROXY_MULTIADDR SWARM_KEY_FILE\n')
  process.exit(2)
}
const addr = multiaddr(target)
const node = await MeshNode.create({
  role: 'bench',
  version: '0',
  listen: [],
  bootstraps: [],
  psk: await readSwarmKeyFile(keyFile),
})
await node.start()
const connection = await node.libp2p.dial(addr)

/** One client connection ↔ one stream, with backpressure both ways; either side's end or
 * error ends both. */
async function splice(socket: Socket): Promise<void> {
  socket.setNoDelay(true)
  socket.pause()
  let stream: Awaited<ReturnType<typeof node.libp2p.dialProtocol>>
  try {
    stream = await node.libp2p.dialProtocol(connection.remotePeer, HTTP_PROTOCOL)
  } catch {
    socket.destroy()
    return
  }
  let preface: Buffer | undefined = Buffer.alloc(0)
  const toClient = (bytes: Uint8Array): void => {
    if (socket.write(bytes)) return
    stream.pause()
    socket.once('drain', () => stream.resume())
  }
  stream.addEventListener('message', (evt) => {
    for (const chunk of evt.data instanceof Uint8Array ? [evt.data] : evt.data) {
      if (preface == null) {
        toClient(chunk)
        continue
      }
      preface = Buffer.concat([preface, chunk])
      if (preface.length < PREFACE_OK.length) continue
      if (!preface.subarray(0, PREFACE_OK.length).equals(PREFACE_OK)) {
        socket.destroy()
        stream.abort(new Error('refused'))
        return
      }
      const rest = preface.subarray(PREFACE_OK.length)
      preface = undefined
      if (rest.length > 0) toClient(rest)
    }
  })
  stream.addEventListener('close', () => socket.destroy())
  socket.on('data', (bytes) => {
    if (stream.send(bytes)) return
    socket.pause()
    stream.addEventListener('drain', () => socket.resume(), { once: true })
  })
  socket.on('end', () => void stream.close().catch(() => {}))
  socket.on('error', () => {})
  socket.on('close', () => {
    if (stream.status === 'open') stream.abort(new Error('client gone'))
  })
  socket.resume()
}

const server = createServer({ noDelay: true }, (socket) => void splice(socket))
server.listen(Number(port), '127.0.0.1', () => process.stdout.write(`listening on ${port}\n`))
process.once('SIGTERM', () => {
  server.close()
  void node.stop().then(() => process.exit(0))
})
