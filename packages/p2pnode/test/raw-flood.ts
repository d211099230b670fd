import { connect, type Socket } from 'node:net'

export interface FloodInit {
  host: string
  port: number
  /** The attacker's source address (a distinct 127.0.0.x is a distinct remote host). */
  localAddresses: string[]
  /** Connections held open from each source address. */
  perAddress: number
  /** A closed connection is reopened after this long. */
  reopenMs: number
  /** What each connection sends once connected (nothing: an idle connection). */
  onConnect?: (socket: Socket) => void
}

/**
 * Raw TCP connections that never finish a handshake, each reopened `reopenMs` after it
 * closes, until stop(). Every socket and timer it made is gone when stop() returns.
 */
export class RawFlood {
  private readonly init: FloodInit
  private readonly sockets = new Set<Socket>()
  private readonly timers = new Set<NodeJS.Timeout>()
  private stopped = false
  /** Connections opened, and how many of them the server closed. */
  opened = 0
  closedByServer = 0

  constructor(init: FloodInit) {
    this.init = init
  }

  start(): void {
    for (const localAddress of this.init.localAddresses) {
      for (let i = 0; i < this.init.perAddress; i++) this.open(localAddress)
    }
  }

  private open(localAddress: string): void {
    if (this.stopped) return
    const socket = connect({ host: this.init.host, port: this.init.port, localAddress })
    this.sockets.add(socket)
    socket.on('connect', () => {
      this.opened++
      this.init.onConnect?.(socket)
    })
    socket.on('data', () => {})
    socket.on('error', () => {})
    socket.on('close', () => {
      this.sockets.delete(socket)
      if (this.stopped) return
      this.closedByServer++
      const timer = setTimeout(() => {
        this.timers.delete(timer)
        this.open(localAddress)
      }, this.init.reopenMs)
      this.timers.add(timer)
    })
  }

  async stop(): Promise<void> {
    this.stopped = true
    for (const t of this.timers) clearTimeout(t)
    this.timers.clear()
    const closing = [...this.sockets].map(
      (s) => new Promise<void>((resolve) => s.once('close', () => resolve())),
    )
    for (const s of this.sockets) s.destroy()
    await Promise.all(closing)
  }
}
