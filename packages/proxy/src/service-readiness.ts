import { connect } from 'node:net'
import { READINESS_TIMEOUT_MS } from './constants.ts'

/** Where the instance's service listens. */
export interface ServiceTarget {
  host: string
  port: number
}

/**
 * Whether the local service is ready: today, that it accepts a TCP connection within
 * READINESS_TIMEOUT_MS. The one place that decides readiness, so a health check (e.g. an
 * HTTP GET of a declared path) can replace it.
 */
export function checkServiceReady(target: ServiceTarget): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: target.host, port: target.port, timeout: READINESS_TIMEOUT_MS })
    const done = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
    socket.once('timeout', () => done(false))
  })
}
