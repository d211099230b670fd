import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from '@libp2p/interface'
import { http } from '@mtc/p2pnode'
import { DEFAULT_HEALTH_INTERVAL_MS, DEFAULT_HEALTH_THRESHOLD } from './constants.ts'

/** A service's HTTP health check, as the registry record or the proxy's flags give it. */
export interface HealthSettings {
  /** Request target, e.g. `/healthz`. */
  path: string
  /** Between two checks; default DEFAULT_HEALTH_INTERVAL_MS. */
  intervalMs?: number
  /** Failed checks in a row that make a ready service not ready; default DEFAULT_HEALTH_THRESHOLD. */
  threshold?: number
}

export interface HealthCheckInit extends HealthSettings {
  target: { host: string; port: number }
  log: Logger
  /** Told each failed check (for metrics). */
  onFailure?: () => void
}

/**
 * Readiness of the local service by HTTP: a GET of the health path on a fresh connection
 * every interval; the service is ready from its first 2xx answer until `threshold` checks
 * in a row fail (a non-2xx answer, a refused connection, or no answer within the interval
 * bounded to 1-2 s). Replaces the TCP check when a health path is set.
 */
export class HealthCheck {
  private readonly init: HealthCheckInit
  private readonly intervalMs: number
  private readonly threshold: number
  private failuresInARow = 0
  /** Ready now (false until the first 2xx). */
  ready = false

  constructor(init: HealthCheckInit) {
    this.init = init
    this.intervalMs = init.intervalMs ?? DEFAULT_HEALTH_INTERVAL_MS
    this.threshold = init.threshold ?? DEFAULT_HEALTH_THRESHOLD
  }

  /** Checks until `signal` aborts (the first check at once). */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const ok = await this.check(signal)
      this.record(ok)
      await sleep(this.intervalMs, undefined, { signal }).catch(() => {})
    }
  }

  /** One result: a pass makes the service ready, `threshold` failures in a row not. */
  record(ok: boolean): void {
    const { log, path } = this.init
    if (ok) {
      if (!this.ready) log('health check %s passes: ready', path)
      this.ready = true
      this.failuresInARow = 0
      return
    }
    this.failuresInARow++
    this.init.onFailure?.()
    if (this.ready && this.failuresInARow >= this.threshold) {
      log('health check %s failed %d times in a row: NOT ready', path, this.failuresInARow)
      this.ready = false
    }
  }

  /** One GET of the health path; true on a 2xx answer. */
  check(signal?: AbortSignal): Promise<boolean> {
    const { host, port } = this.init.target
    const timeoutMs = Math.min(
      Math.max(this.intervalMs, HEALTH_TIMEOUT_MIN_MS),
      HEALTH_TIMEOUT_CAP_MS,
    )
    return new Promise((resolve) => {
      const req = http.get(
        {
          host,
          port,
          path: this.init.path,
          agent: false,
          headers: { 'user-agent': 'mtc-proxy-health-check', connection: 'close' },
          signal:
            signal != null
              ? AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)])
              : AbortSignal.timeout(timeoutMs),
        },
        (res) => {
          const code = res.statusCode ?? 0
          // The body is not needed; a large one is not read.
          res.destroy()
          resolve(code >= 200 && code < 300)
        },
      )
      req.once('error', () => resolve(false))
    })
  }
}

/** A health answer gets the interval, at least HEALTH_TIMEOUT_MIN_MS (a loaded host answers
 * late, not wrong) and at most HEALTH_TIMEOUT_CAP_MS. */
const HEALTH_TIMEOUT_MIN_MS = 1_000
const HEALTH_TIMEOUT_CAP_MS = 2_000
