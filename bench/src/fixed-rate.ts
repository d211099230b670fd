import { Agent, request } from 'node:http'

/** Timer period of the schedule; each tick sends every request due by then. */
const TICK_MS = 10
/** Enough keep-alive connections that a slow answer does not hold back the schedule. */
const MAX_SOCKETS = 32

function get(agent: Agent, url: URL): Promise<boolean> {
  return new Promise((resolve) => {
    request(url, { agent }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode === 200))
      res.on('error', () => resolve(false))
    })
      .on('error', () => resolve(false))
      .end()
  })
}

/**
 * GETs `url` at a fixed `rps` for `ms` (open loop: requests are sent on schedule whether
 * or not earlier ones have answered), e.g. to measure a process's memory under a given
 * load; wrk cannot limit its rate and wrk2 is not in Debian.
 */
export async function fixedRate(
  url: string,
  rps: number,
  ms: number,
): Promise<{ sent: number; failed: number; rps: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: MAX_SOCKETS })
  const target = new URL(url)
  const pending: Promise<boolean>[] = []
  let sent = 0
  const t0 = performance.now()
  await new Promise<void>((done) => {
    const timer = setInterval(() => {
      const elapsed = Math.min(performance.now() - t0, ms)
      for (const due = Math.floor((elapsed / 1000) * rps); sent < due; sent++)
        pending.push(get(agent, target))
      if (elapsed >= ms) {
        clearInterval(timer)
        done()
      }
    }, TICK_MS)
  })
  const answers = await Promise.all(pending)
  agent.destroy()
  return {
    sent,
    failed: answers.filter((ok) => !ok).length,
    rps: sent / (ms / 1000),
  }
}
