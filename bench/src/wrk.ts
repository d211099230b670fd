import { join } from 'node:path'
import { runToEnd } from '@mtc/testkit'
import { cpuMs } from './stats.ts'

/** What one wrk run measured; latencies in ms. */
export interface Load {
  connections: number
  requests: number
  rps: number
  p50: number
  p99: number
  /** Socket errors, timeouts and non-2xx/3xx answers together. */
  errors: number
  /** CPU time each of `wrk()`'s `pids` used during the measured run, in ms. */
  cpuMs?: number[]
}

const REPORT_SCRIPT = join(import.meta.dirname, 'wrk-json.lua')
/** Connections opened before each measured run. */
const WARMUP_SECONDS = 1

async function runWrk(url: string, connections: number, seconds: number): Promise<Load> {
  const args = ['-t', String(Math.min(connections, 2)), '-c', String(connections)]
  args.push('-d', `${seconds}s`, '--timeout', '10s', '-s', REPORT_SCRIPT, url)
  const out = await runToEnd('wrk', args, { timeoutMs: (seconds + 30) * 1000 })
  const json = out.stdout.split('\n').find((l) => l.startsWith('{'))
  if (out.code !== 0 || json == null) throw new Error(`wrk ${url}: ${out.stderr}${out.stdout}`)
  const s = JSON.parse(json)
  const e = s.errors
  return {
    connections,
    requests: s.requests,
    rps: s.requests / (s.durationUs / 1e6),
    p50: s.p50Us / 1000,
    p99: s.p99Us / 1000,
    errors: e.connect + e.read + e.write + e.status + e.timeout,
  }
}

/**
 * Brings the processes behind `url` to their steady state: `seconds` of load on
 * `connections` connections, unmeasured. V8 is still compiling hot code tens of
 * thousands of requests after start-up (on the proxy, ~150 optimisations in 3 s after
 * 10 s of traffic, ~5 after 40 s), and a long-running daemon is measured at its steady
 * state, not during its warm-up.
 */
export async function warmUp(url: string, connections: number, seconds: number): Promise<void> {
  await runWrk(url, connections, seconds)
}

/**
 * Loads `url` with wrk (Debian's `wrk`, installed by scripts/setup.sh): `connections`
 * keep-alive connections for `seconds`, after a short warm-up. wrk times every request
 * itself (to the microsecond), so no Node client's overhead is in the figures. With
 * `pids`, also the CPU time those processes used during the measured run.
 */
export async function wrk(
  url: string,
  connections: number,
  seconds: number,
  pids: number[] = [],
): Promise<Load> {
  await runWrk(url, connections, WARMUP_SECONDS)
  const before = await Promise.all(pids.map(cpuMs))
  const load = await runWrk(url, connections, seconds)
  if (pids.length === 0) return load
  const after = await Promise.all(pids.map(cpuMs))
  return { ...load, cpuMs: after.map((v, i) => v - before[i]) }
}
