import type { ComponentLogger, Connection, Logger, Stream } from '@libp2p/interface'
import { Counter, type Registry } from 'prom-client'
import {
  LIVENESS_BUSY_INTERVAL_MS,
  LIVENESS_IDLE_INTERVAL_MS,
  LIVENESS_MAX_WAIT_MS,
  LIVENESS_POLL_MS,
  LIVENESS_TIMEOUT_MS,
  RTT_PROTOCOL,
} from './constants.ts'
import { echoRounds } from './rtt.ts'

/** What one liveness ping says about a connection. */
export type LivenessVerdict =
  /** The peer answered: an echo, a refusal (older release), a reset, or bytes kept coming. */
  | 'alive'
  /** Nothing at all arrived on the connection for the silence timeout. */
  | 'silent'
  /** The ping could not be made here (local stream limit, connection closing): no verdict. */
  | 'skipped'

/**
 * Errors raised on this side before anything reaches the peer: they say nothing about
 * whether the peer is alive (libp2p's monitor aborted the connection on them).
 */
const LOCAL_ERRORS = new Set([
  'TooManyOutboundProtocolStreamsError',
  'ConnectionClosedError',
  'MuxerClosedError',
  'MuxerUnavailableError',
  'LimitedConnectionError',
  'StreamStateError',
])

/**
 * Bytes read so far from the TCP socket under `conn`, or undefined when that cannot be
 * seen. libp2p's Connection does not expose its transport in its interface; this reads
 * `maConn.socket.bytesRead` of @libp2p/tcp (a counter: reading it changes nothing). The
 * liveness tests check it works with the installed libp2p.
 */
export function receivedBytes(conn: Connection): number | undefined {
  const socket = (conn as unknown as { maConn?: { socket?: { bytesRead?: unknown } } }).maConn
    ?.socket
  return typeof socket?.bytesRead === 'number' ? socket.bytesRead : undefined
}

export interface PingTimeouts {
  /** Silence (no echo, no byte on the connection) that makes the verdict 'silent'. */
  silenceMs: number
  /** A ping unanswered this long while bytes keep arriving is given up as 'alive'. */
  maxWaitMs?: number
  /** How often the received-bytes counter is looked at. */
  pollMs?: number
}

/**
 * How long a connection has been silent, counted only in time this process was running
 * on schedule. A poll that comes late means this process was stalled (CPU starvation, a
 * long GC) and did not read its sockets meanwhile: it cannot tell the peer's silence from
 * its own stall, so a late poll adds at most 1.5 poll intervals of silence (SWIM's
 * Lifeguard "local health" in its simplest form). A poll later than 3 intervals restarts
 * the count.
 */
export class SilenceClock {
  private readonly pollMs: number
  private lastPoll: number
  private lastBytes: number | undefined
  private silent = 0

  constructor(pollMs: number, now: number, bytes: number | undefined) {
    this.pollMs = pollMs
    this.lastPoll = now
    this.lastBytes = bytes
  }

  /** Records one poll; returns the silence so far in ms. */
  observe(now: number, bytes: number | undefined): number {
    const elapsed = now - this.lastPoll
    if (bytes !== this.lastBytes || elapsed > 3 * this.pollMs) this.silent = 0
    else this.silent += Math.min(elapsed, 1.5 * this.pollMs)
    this.lastBytes = bytes
    this.lastPoll = now
    return this.silent
  }
}

/**
 * One liveness ping on `conn`: opens an RTT_PROTOCOL stream, sends one ping and waits for
 * its echo. The wait ends as 'silent' only after `silenceMs` in which nothing at all
 * arrived on the connection; a ping queued behind a transfer is not a dead peer. `stop`
 * aborted (the node stops) gives 'skipped'.
 */
export async function pingConnection(
  conn: Connection,
  timeouts: PingTimeouts,
  stop: AbortSignal,
): Promise<{ verdict: LivenessVerdict; rttMs?: number; error?: Error }> {
  const { silenceMs } = timeouts
  const maxWaitMs = timeouts.maxWaitMs ?? LIVENESS_MAX_WAIT_MS
  const pollMs = Math.min(timeouts.pollMs ?? LIVENESS_POLL_MS, silenceMs)
  const waiter = new AbortController()
  const signal = AbortSignal.any([waiter.signal, stop])
  let silent = false
  const sentAt = performance.now()
  const clock = new SilenceClock(pollMs, sentAt, receivedBytes(conn))
  const poll = setInterval(() => {
    const now = performance.now()
    if (clock.observe(now, receivedBytes(conn)) >= silenceMs) {
      silent = true
      waiter.abort(new Error(`nothing received for ${silenceMs} ms after a liveness ping`))
    } else if (now - sentAt >= maxWaitMs) {
      waiter.abort(new Error(`liveness ping unanswered for ${maxWaitMs} ms on a busy connection`))
    }
  }, pollMs)
  let stream: Stream | undefined
  try {
    stream = await conn.newStream(RTT_PROTOCOL, { signal, runOnLimitedConnection: true })
    const seconds = await echoRounds(stream, 1, signal)
    // Half-close and let the echo side finish in the background: the verdict is in.
    const s = stream
    s.close({ signal: AbortSignal.timeout(maxWaitMs) }).catch((err: Error) => s.abort(err))
    return { verdict: 'alive', rttMs: seconds * 1000 }
  } catch (err) {
    const error = err as Error
    stream?.abort(error)
    if (stop.aborted || conn.status !== 'open') return { verdict: 'skipped', error }
    if (silent) return { verdict: 'silent', error }
    if (waiter.signal.aborted) return { verdict: 'alive', error }
    if (LOCAL_ERRORS.has(error.name)) return { verdict: 'skipped', error }
    return { verdict: 'alive', error }
  } finally {
    clearInterval(poll)
  }
}

export interface LivenessInit {
  /** Ping interval of a connection with open streams (default LIVENESS_BUSY_INTERVAL_MS). */
  busyIntervalMs?: number
  /** Ping interval of a connection without streams (default LIVENESS_IDLE_INTERVAL_MS). */
  idleIntervalMs?: number
  /** Silence after a ping that aborts the connection (default LIVENESS_TIMEOUT_MS). */
  timeoutMs?: number
  /** Where `mtc_liveness_pings_total{verdict}` is registered. */
  registry?: Registry
}

interface LivenessComponents {
  connectionManager: { getConnections(): Connection[] }
  logger: ComponentLogger
}

/** A slow peer gets at most this many timeouts of silence. */
const SLOW_PEER_FACTOR = 5

/** Peers whose slow-echo history is kept (the oldest entry goes first beyond it). */
export const MAX_TRACKED_PEERS = 4_096

/** A peer's echo history: forgotten when no echo came for this long. */
export const PEER_HISTORY_MS = 10 * 60_000

/**
 * The decaying peak of each peer's liveness echo times, kept per peer rather than per
 * connection: a redial after a cut (or a second connection) starts from what the peer
 * was, not from nothing. Bounded in entries and age.
 */
export class SlowEchoHistory {
  private readonly peers = new Map<string, { slowMs: number; at: number }>()
  private readonly maxPeers: number
  private readonly maxAgeMs: number

  constructor(maxPeers = MAX_TRACKED_PEERS, maxAgeMs = PEER_HISTORY_MS) {
    this.maxPeers = maxPeers
    this.maxAgeMs = maxAgeMs
  }

  get size(): number {
    return this.peers.size
  }

  /** The peer's recent slowest echo in ms, or undefined when none is known (or too old). */
  get(peer: string, now = performance.now()): number | undefined {
    const e = this.peers.get(peer)
    if (e == null) return undefined
    if (now - e.at > this.maxAgeMs) {
      this.peers.delete(peer)
      return undefined
    }
    return e.slowMs
  }

  /** Records one echo: the peak decays by a quarter with each echo faster than it. */
  record(peer: string, rttMs: number, now = performance.now()): void {
    const slowMs = Math.max(rttMs, 0.75 * (this.get(peer, now) ?? 0))
    // Re-inserted, so the map's order is the order of last echo: the first is the oldest.
    this.peers.delete(peer)
    this.peers.set(peer, { slowMs, at: now })
    while (this.peers.size > this.maxPeers) {
      const oldest = this.peers.keys().next().value as string
      this.peers.delete(oldest)
    }
  }
}

/** Streams other than liveness and RTT probes: the connection carries traffic. */
function carriesTraffic(conn: Connection): boolean {
  return conn.streams.some((s) => s.protocol !== RTT_PROTOCOL)
}

/**
 * Replaces libp2p's connection monitor: pings every open connection — every
 * `busyIntervalMs` while it has streams, every `idleIntervalMs` otherwise — and aborts it
 * only when nothing at all arrives on it for `timeoutMs` after a ping, never because the
 * ping could not start here. At most one ping per connection is in flight.
 */
export class LivenessMonitor {
  private readonly components: LivenessComponents
  private readonly busyIntervalMs: number
  private readonly idleIntervalMs: number
  private readonly timeoutMs: number
  private readonly log: Logger
  private readonly pings: Counter<'verdict'> | undefined
  private readonly inFlight = new WeakSet<Connection>()
  private readonly lastPing = new WeakMap<Connection, number>()
  /** Connections whose peer answered a liveness ping at least once. */
  private readonly echoed = new WeakSet<Connection>()
  /** Decaying peak of each peer's echo times (ms), across its connections. */
  private readonly slowEcho = new SlowEchoHistory()
  private controller = new AbortController()
  private timer: NodeJS.Timeout | undefined
  private lastRound = 0

  constructor(components: LivenessComponents, init: LivenessInit = {}) {
    this.components = components
    this.busyIntervalMs = init.busyIntervalMs ?? LIVENESS_BUSY_INTERVAL_MS
    this.idleIntervalMs = Math.max(
      init.idleIntervalMs ?? LIVENESS_IDLE_INTERVAL_MS,
      this.busyIntervalMs,
    )
    this.timeoutMs = init.timeoutMs ?? LIVENESS_TIMEOUT_MS
    this.log = components.logger.forComponent('mtc:liveness')
    this.pings =
      init.registry == null
        ? undefined
        : new Counter({
            name: 'mtc_liveness_pings_total',
            help: 'Liveness pings of open connections, by verdict (alive; silent: the connection was aborted; skipped: could not ping here)',
            labelNames: ['verdict'],
            registers: [init.registry],
          })
  }

  readonly [Symbol.toStringTag] = '@mtc/liveness'

  start(): void {
    this.controller = new AbortController()
    this.lastRound = 0
    this.timer = setInterval(() => this.round(), this.busyIntervalMs)
    this.timer.unref()
  }

  stop(): void {
    clearInterval(this.timer)
    this.controller.abort()
  }

  private round(): void {
    // A round late by seconds: this process was stalled (CPU starvation, GC), and its peers
    // may have judged it silent meanwhile. Said in the log, as the cuts it causes are.
    const at = performance.now()
    if (this.lastRound > 0 && at - this.lastRound > 2 * this.busyIntervalMs) {
      this.log(
        'this process was stalled: liveness round %d ms late',
        Math.round(at - this.lastRound - this.busyIntervalMs),
      )
    }
    this.lastRound = at
    const now = Date.now()
    for (const conn of this.components.connectionManager.getConnections()) {
      if (conn.status !== 'open' || this.inFlight.has(conn)) continue
      const last = this.lastPing.get(conn) ?? conn.timeline.open
      // The round runs every busyIntervalMs; 10 % slack keeps timer jitter from skipping one.
      const due = carriesTraffic(conn) ? 0 : this.idleIntervalMs - this.busyIntervalMs / 10
      if (now - last < due) continue
      this.lastPing.set(conn, now)
      this.inFlight.add(conn)
      void this.check(conn).finally(() => this.inFlight.delete(conn))
    }
  }

  /**
   * The silence that condemns `conn`: the timeout, or 4 × its peer's recent slowest echo
   * when that is longer (as TCP's retransmission timeout follows the RTT's variation), at
   * most SLOW_PEER_FACTOR timeouts. A peer that answers slowly but answers (a loaded host,
   * long GC pauses) is given time in proportion; a fast peer that dies is cut after the
   * timeout. A peer nothing is known of gets the most until its first echo: a process
   * just started (loading, joining the DHT, identifying with its peers) is slow, and
   * cutting it then only makes everyone redial it.
   */
  private silenceFor(conn: Connection): number {
    const max = SLOW_PEER_FACTOR * this.timeoutMs
    const slow = this.slowEcho.get(conn.remotePeer.toString())
    if (slow == null) return this.echoed.has(conn) ? this.timeoutMs : max
    return Math.min(Math.max(this.timeoutMs, 4 * slow), max)
  }

  private async check(conn: Connection): Promise<void> {
    const silenceMs = this.silenceFor(conn)
    const { verdict, rttMs, error } = await pingConnection(
      conn,
      { silenceMs },
      this.controller.signal,
    )
    this.pings?.inc({ verdict })
    if (verdict === 'alive') this.echoed.add(conn)
    if (rttMs != null) {
      conn.rtt = rttMs
      this.slowEcho.record(conn.remotePeer.toString(), rttMs)
    }
    if (verdict === 'silent') {
      this.log.error(
        'aborting connection to %p: nothing received for %d ms after a liveness ping',
        conn.remotePeer,
        silenceMs,
      )
      conn.abort(new Error(`peer silent for ${silenceMs} ms after a liveness ping`))
    } else if (verdict === 'skipped' && error != null) {
      this.log.trace('liveness ping of %p skipped: %s', conn.remotePeer, error.message)
    }
  }
}

export function livenessMonitor(
  init: LivenessInit = {},
): (components: LivenessComponents) => LivenessMonitor {
  return (components) => new LivenessMonitor(components, init)
}
