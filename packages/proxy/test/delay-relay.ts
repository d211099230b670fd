import { connect, createServer, type Server, type Socket } from 'node:net'
import { freePort } from '@mtc/testkit'

/**
 * A TCP relay on loopback that delays what the target sends back by `delayMs` (settable):
 * in front of a service it slows its answers; in front of a mesh node's libp2p port it
 * adds `delayMs` to the RTT of the connections made through it. The target is a loopback
 * TCP port or a Unix socket path (which a process in another network namespace can
 * listen on: see behind-relay.ts).
 */
export class DelayRelay {
  delayMs: number
  port = 0
  private server?: Server
  private readonly sockets = new Set<Socket>()
  private readonly target: number | string

  constructor(target: number | string, delayMs: number) {
    this.target = target
    this.delayMs = delayMs
  }

  async start(): Promise<void> {
    this.port = await freePort()
    this.server = createServer((client) => {
      const upstream =
        typeof this.target === 'number' ? connect(this.target, '127.0.0.1') : connect(this.target)
      this.sockets.add(client).add(upstream)
      let due = 0
      upstream.on('data', (chunk: Buffer) => {
        // Keep order: each chunk leaves no earlier than the one before it.
        due = Math.max(Date.now() + this.delayMs, due)
        setTimeout(() => client.writable && client.write(chunk), due - Date.now())
      })
      client.pipe(upstream)
      const close = (): void => {
        client.destroy()
        upstream.destroy()
        this.sockets.delete(client)
        this.sockets.delete(upstream)
      }
      client.on('error', close).on('close', close)
      upstream.on('error', close).on('close', () => setTimeout(close, this.delayMs))
    })
    await new Promise<void>((resolve) => this.server!.listen(this.port, '127.0.0.1', resolve))
  }

  /** `/ip4/127.0.0.1/tcp/<port>/p2p/<peerId>`: dialling it reaches the target through the relay. */
  multiaddr(peerId: string): string {
    return `${this.address()}/p2p/${peerId}`
  }

  /** `/ip4/127.0.0.1/tcp/<port>`: the relay's own address. */
  address(): string {
    return `/ip4/127.0.0.1/tcp/${this.port}`
  }

  /** The instance's service dies: nothing listens, open connections are cut. */
  kill(): void {
    this.server?.close()
    for (const s of this.sockets) s.destroy()
  }
}
