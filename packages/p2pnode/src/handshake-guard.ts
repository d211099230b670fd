import type { ConnectionGater, MultiaddrConnection } from '@libp2p/interface'
import { Counter, type Registry } from 'prom-client'

export interface HandshakeGuardInit {
  /** Inbound connections in their handshake at once, from all addresses. */
  maxPending: number
  /** Inbound connections in their handshake at once from one remote IP. */
  maxPendingPerHost: number
  /** Where `mtc_handshakes_evicted_total{scope}` is registered. */
  registry?: Registry
}

/** The remote IP of a connection (the whole address when it has none). */
function hostOf(maConn: MultiaddrConnection): string {
  const ip = maConn.remoteAddr
    .getComponents()
    .find((c) => c.name === 'ip4' || c.name === 'ip6')?.value
  return ip ?? maConn.remoteAddr.toString()
}

/**
 * Bounds inbound connections that have not proven the key yet (PSK nonce exchange +
 * Noise), through libp2p's connection gater. When the cap for the remote's IP, or the
 * overall cap, is reached, the oldest pending connection (of that IP, or overall) is
 * aborted to make room: a peer with the key finishes its handshake in a few round trips
 * and leaves the pending set, an idle outsider holding slots is the one evicted. So a
 * newcomer always gets a slot, and an outsider's connections only ever push out each
 * other (libp2p alone refuses new connections once its pending cap is reached, and
 * 150 idle sockets from one address locked every peer out).
 */
export class HandshakeGuard {
  private readonly init: HandshakeGuardInit
  /** Pending connections, oldest first (a Map keeps insertion order), with their IP. */
  private readonly pending = new Map<MultiaddrConnection, string>()
  private readonly perHost = new Map<string, number>()
  private readonly evictions: Counter<'scope'> | undefined

  constructor(init: HandshakeGuardInit) {
    this.init = init
    this.evictions =
      init.registry == null
        ? undefined
        : new Counter({
            name: 'mtc_handshakes_evicted_total',
            help: 'Inbound connections aborted in their handshake to make room for a newer one (scope: host = the per-IP cap, all = the overall cap)',
            labelNames: ['scope'],
            registers: [init.registry],
          })
  }

  /** Connections in their handshake now. */
  get pendingCount(): number {
    return this.pending.size
  }

  /** The gater hooks: admit at the start of the upgrade, release once encrypted. */
  gater(): ConnectionGater {
    return {
      denyInboundConnection: (maConn) => {
        this.admit(maConn)
        return false
      },
      denyInboundEncryptedConnection: (_peer, maConn) => {
        this.release(maConn)
        return false
      },
    }
  }

  private admit(maConn: MultiaddrConnection): void {
    const host = hostOf(maConn)
    if ((this.perHost.get(host) ?? 0) >= this.init.maxPendingPerHost) {
      this.evictOldest('host', (h) => h === host)
    }
    if (this.pending.size >= this.init.maxPending) this.evictOldest('all', () => true)
    this.pending.set(maConn, host)
    this.perHost.set(host, (this.perHost.get(host) ?? 0) + 1)
    maConn.addEventListener('close', () => this.release(maConn), { once: true })
  }

  private release(maConn: MultiaddrConnection): void {
    const host = this.pending.get(maConn)
    if (host == null) return
    this.pending.delete(maConn)
    const left = (this.perHost.get(host) ?? 1) - 1
    if (left > 0) this.perHost.set(host, left)
    else this.perHost.delete(host)
  }

  private evictOldest(scope: 'host' | 'all', match: (host: string) => boolean): void {
    for (const [maConn, host] of this.pending) {
      if (!match(host)) continue
      this.release(maConn)
      this.evictions?.inc({ scope })
      maConn.abort(new Error('handshake not finished; evicted for a newer connection'))
      return
    }
  }
}
