import type { ComponentLogger, Connection, Logger, Stream } from '@libp2p/interface'
import { Counter, type Registry } from 'prom-client'
import { LIVENESS_INTERVAL_MS, LIVENESS_TIMEOUT_MS, RTT_PROTOCOL } from './constants.ts'
import { echoRounds } from './rtt.ts'

/** What one liveness ping says about a connection. */
export type LivenessVerdict =
  /** The peer answered: an echo, a refusal (older release), a reset — anything. */
  | 'alive'
  /** Nothing came back within the timeout. */
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
 * One liveness ping on `conn`: opens an RTT_PROTOCOL stream, sends one ping and waits for
 * its echo. `stop` aborted (the node stops) gives 'skipped'.
 */
export async function pingConnection(
  conn: Connection,
  timeoutMs: number,
  stop: AbortSignal,
): Promise<{ verdict: LivenessVerdict; rttMs?: number; error?: Error }> {
  const timeout = AbortSignal.timeout(timeoutMs)
  const signal = AbortSignal.any([timeout, stop])
  let stream: Stream | undefined
  try {
    stream = await conn.newStream(RTT_PROTOCOL, { signal, runOnLimitedConnection: true })
    const seconds = await echoRounds(stream, 1, signal)
    // Half-close and let the echo side finish in the background: the verdict is in.
    const s = stream
    s.close({ signal: AbortSignal.timeout(timeoutMs) }).catch((err: Error) => s.abort(err))
    return { verdict: 'alive', rttMs: seconds * 1000 }
  } catch (err) {
    const error = err as Error
    stream?.abort(error)
    if (stop.aborted || conn.status !== 'open') return { verdict: 'skipped', error }
    if (timeout.aborted) return { verdict: 'silent', error }
    if (LOCAL_ERRORS.has(error.name)) return { verdict: 'skipped', error }
    return { verdict: 'alive', error }
  }
}

export interface LivenessInit {
  /** How often each connection is pinged (default LIVENESS_INTERVAL_MS). */
  intervalMs?: number
  /** Silence after a ping that aborts the connection (default LIVENESS_TIMEOUT_MS). */
  timeoutMs?: number
  /** Where `mtc_liveness_pings_total{verdict}` is registered. */
  registry?: Registry
}

interface LivenessComponents {
  connectionManager: { getConnections(): Connection[] }
  logger: ComponentLogger
}

/**
 * Replaces libp2p's connection monitor: pings every open connection every `intervalMs`
 * and aborts a connection only when its peer stays silent for `timeoutMs` — never
 * because the ping could not start here. At most one ping per connection is in flight.
 */
export class LivenessMonitor {
  private readonly components: LivenessComponents
  private readonly intervalMs: number
  private readonly timeoutMs: number
  private readonly log: Logger
  private readonly pings: Counter<'verdict'> | undefined
  private readonly inFlight = new Set<string>()
  private controller = new AbortController()
  private timer: NodeJS.Timeout | undefined

  constructor(components: LivenessComponents, init: LivenessInit = {}) {
    this.components = components
    this.intervalMs = init.intervalMs ?? LIVENESS_INTERVAL_MS
    this.timeoutMs = init.timeoutMs ?? LIVENESS_TIMEOUT_MS
    this.log = components.logger.forComponent('mtc:liveness')
    this.pings =
      init.registry == null
        ? undefined
        : new Counter({
            name: 'mtc_liveness_pings_total',
            help: 'Liveness pings of open connections, by verdict (alive, silent: connection aborted, skipped)',
            labelNames: ['verdict'],
            registers: [init.registry],
          })
  }

  readonly [Symbol.toStringTag] = '@mtc/liveness'

  start(): void {
    this.controller = new AbortController()
    this.timer = setInterval(() => this.round(), this.intervalMs)
    this.timer.unref()
  }

  stop(): void {
    clearInterval(this.timer)
    this.controller.abort()
    this.inFlight.clear()
  }

  private round(): void {
    for (const conn of this.components.connectionManager.getConnections()) {
      if (conn.status !== 'open' || this.inFlight.has(conn.id)) continue
      this.inFlight.add(conn.id)
      void this.check(conn).finally(() => this.inFlight.delete(conn.id))
    }
  }

  private async check(conn: Connection): Promise<void> {
    const { verdict, rttMs, error } = await pingConnection(
      conn,
      this.timeoutMs,
      this.controller.signal,
    )
    this.pings?.inc({ verdict })
    if (rttMs != null) conn.rtt = rttMs
    if (verdict === 'silent') {
      this.log.error(
        'aborting connection to %p: no answer to a liveness ping within %d ms',
        conn.remotePeer,
        this.timeoutMs,
      )
      conn.abort(new Error(`peer silent for ${this.timeoutMs} ms after a liveness ping`))
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
