import type { Libp2p, Logger, PeerId } from '@libp2p/interface'
import type { Multiaddr } from '@multiformats/multiaddr'
import { Backoff } from './backoff.ts'
import {
  BOOTSTRAP_BACKOFF_FACTOR,
  BOOTSTRAP_BACKOFF_INITIAL_MS,
  BOOTSTRAP_BACKOFF_MAX_MS,
  BOOTSTRAP_DIAL_TIMEOUT_MS,
} from './constants.ts'

export interface BootstrapKeeperInit {
  bootstraps: Multiaddr[]
  backoffInitialMs?: number
  backoffMaxMs?: number
  dialTimeoutMs?: number
}

/**
 * Keeps a connection to every bootstrap: dials all of them, retries with capped
 * exponential backoff forever, and redials one as soon as its connection is lost.
 */
export class BootstrapKeeper {
  private readonly libp2p: Libp2p
  private readonly log: Logger
  private readonly init: Required<BootstrapKeeperInit>
  private controller?: AbortController
  private loops: Array<Promise<void>> = []
  private readonly connected = new Set<string>()

  constructor(libp2p: Libp2p, log: Logger, init: BootstrapKeeperInit) {
    this.libp2p = libp2p
    this.log = log
    this.init = {
      bootstraps: init.bootstraps,
      backoffInitialMs: init.backoffInitialMs ?? BOOTSTRAP_BACKOFF_INITIAL_MS,
      backoffMaxMs: init.backoffMaxMs ?? BOOTSTRAP_BACKOFF_MAX_MS,
      dialTimeoutMs: init.dialTimeoutMs ?? BOOTSTRAP_DIAL_TIMEOUT_MS,
    }
  }

  start(): void {
    if (this.controller != null) return
    this.controller = new AbortController()
    const own = this.libp2p.peerId.toString()
    this.loops = this.init.bootstraps
      .filter((ma) => ma.getComponents().find((c) => c.name === 'p2p')?.value !== own)
      .map((ma) => this.keep(ma, this.controller!.signal))
  }

  async stop(): Promise<void> {
    this.controller?.abort()
    this.controller = undefined
    await Promise.all(this.loops)
    this.loops = []
  }

  /** Addresses of the bootstraps currently connected. */
  connectedBootstraps(): string[] {
    return [...this.connected]
  }

  private async keep(ma: Multiaddr, signal: AbortSignal): Promise<void> {
    const backoff = new Backoff({
      initialMs: this.init.backoffInitialMs,
      maxMs: this.init.backoffMaxMs,
      factor: BOOTSTRAP_BACKOFF_FACTOR,
    })
    while (!signal.aborted) {
      let peer: PeerId
      try {
        const conn = await this.libp2p.dial(ma, {
          signal: AbortSignal.any([signal, AbortSignal.timeout(this.init.dialTimeoutMs)]),
        })
        peer = conn.remotePeer
      } catch (err) {
        if (signal.aborted) return
        this.log('bootstrap %a unreachable: %s', ma, (err as Error).message)
        if (!(await backoff.wait(signal))) return
        continue
      }
      backoff.reset()
      this.connected.add(ma.toString())
      this.log('connected to bootstrap %a', ma)
      await this.disconnected(peer, signal)
      this.connected.delete(ma.toString())
      if (!signal.aborted) this.log('lost bootstrap %a, redialling', ma)
      if (!(await backoff.wait(signal))) return
    }
  }

  /** Resolves when the last connection to `peer` closes, or on abort. */
  private async disconnected(peer: PeerId, signal: AbortSignal): Promise<void> {
    if (this.libp2p.getConnections(peer).length === 0) return
    const { promise, resolve } = Promise.withResolvers<void>()
    const onDisconnect = (evt: CustomEvent<PeerId>): void => {
      if (evt.detail.equals(peer)) resolve()
    }
    const onAbort = (): void => resolve()
    this.libp2p.addEventListener('peer:disconnect', onDisconnect)
    signal.addEventListener('abort', onAbort, { once: true })
    try {
      await promise
    } finally {
      this.libp2p.removeEventListener('peer:disconnect', onDisconnect)
      signal.removeEventListener('abort', onAbort)
    }
  }
}
