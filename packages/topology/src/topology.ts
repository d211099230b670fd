import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { binPath, type Proc, run, runToEnd } from '@mtc/testkit'
import {
  BASE_PROBE_RTT_MS,
  COMMAND_TIMEOUT_MS,
  ECHO_MAX_LIFETIME_S,
  FORWARDER_TIMEOUT_MS,
  HOST_NAME,
  MAX_HOSTS,
  MAX_RTT_MS,
  NETNS_PREFIX,
  PROBE_COUNT,
  PROBE_INTERVAL_MS,
  PROBE_TIMEOUT_MS,
  RTT_ATTEMPTS,
  RTT_TOLERANCE_FLOOR_MS,
  RTT_TOLERANCE_RATIO,
  STOP_GRACE_MS,
  SUBNET_PREFIX,
  WAN_IF_PREFIX,
} from './constants.ts'
import { ExitReaper, killQuietly, ofDeadRun, pidsIn } from './processes.ts'

/** The package root, from src/ (run from source) or dist/src/ (built). */
const PKG_ROOT = resolve(
  import.meta.dirname,
  import.meta.dirname.includes('/dist/') ? '../..' : '..',
)
const FORWARDER = join(PKG_ROOT, 'src', 'forwarder.py')
const PROBE = join(PKG_ROOT, 'src', 'probe.py')
const PYTHON = 'python3'

/** A topology: host names and the RTT (ms) per pair, keyed `a-b` in either order (default 0). */
export interface TopologySpec {
  hosts: string[]
  rtt?: Record<string, number>
}

export interface RttMeasurement {
  a: string
  b: string
  configuredMs: number
  /** Median of the answered probes (NaN if none answered). */
  medianMs: number
  minMs: number
  maxMs: number
  lost: number
  /**
   * Median RTT of the base probes sent right after each probe on the same path, which the
   * forwarder holds 0.5 ms each way instead of the pair's delay, less that 1 ms: what the
   * emulation itself adds (TUN, the forwarder's timer waking late, the probe processes),
   * ~0.3 ms on a quiet machine, several ms on a very busy one (NaN if none answered).
   */
  baseMs: number
  /** Measurements taken: a measurement out of tolerance is taken again, a bounded number of times. */
  attempts: number
  ok: boolean
}

/** One HTTP answer as {@link Topology.fetch} reports it. */
export interface HttpAnswer {
  /** 0 when no answer came (then `error` says why). */
  status: number
  /** Lower-case names. */
  headers: Record<string, string>
  /** The body as text, at most 4 KiB of it; `bytes` is its full length. */
  body: string
  bytes: number
  /** From sending the request to the end of the body, measured inside the host. */
  ms: number
  error?: string
}

/** One answer of {@link Topology.fetchStream}. */
export interface StreamAnswer {
  /** Sequence number: request i was sent at `intervalMs × i` after the first. */
  i: number
  /** When it was sent, in ms since the epoch (as `Date.now()`). */
  at: number
  /** Until the end of the answer, or of the failure. */
  ms: number
  /** 0 when no answer came (then `error` says why). */
  status: number
  /** The `X-Mtc-Error` header, if any. */
  code: string
  bytes: number
  error?: string
}

/**
 * Whether a measured RTT agrees with the configured one: within 20 % (or 1 ms for small
 * values) of it, above it by at most `baseMs` more, what the harness itself adds to every
 * round trip (measured alongside: {@link RttMeasurement.baseMs}). A packet is never
 * delivered early, so the lower bound is not widened.
 */
export function rttWithinTolerance(measuredMs: number, configuredMs: number, baseMs = 0): boolean {
  const tolerance = Math.max(configuredMs * RTT_TOLERANCE_RATIO, RTT_TOLERANCE_FLOOR_MS)
  const base = Number.isFinite(baseMs) && baseMs > 0 ? baseMs : 0
  return measuredMs >= configuredMs - tolerance && measuredMs <= configuredMs + base + tolerance
}

function median(sorted: number[]): number {
  return sorted.length > 0 ? sorted[Math.floor(sorted.length / 2)] : Number.NaN
}

function answered(samples: Array<number | null>): number[] {
  return samples.filter((s): s is number => s != null).sort((x, y) => x - y)
}

/** How many probes per measurement, and how often one out of tolerance is taken again. */
export interface MeasureOptions {
  /** Probes per measurement (default 10). */
  count?: number
  /**
   * Measurements at most (default 5): a busy machine delays the forwarder's timers by
   * several ms for a few hundred ms at a time, which one retry almost always misses. A
   * wrong delay is out of tolerance every time. 1 when loss is expected (a cut host).
   */
  attempts?: number
}

/** Validates a spec and returns the RTT matrix (ms) indexed by host index. */
export function parseSpec(spec: TopologySpec): number[][] {
  const { hosts } = spec
  if (!Array.isArray(hosts) || hosts.length < 1 || hosts.length > MAX_HOSTS) {
    throw new Error(`topology: hosts must be a list of 1 to ${MAX_HOSTS} names`)
  }
  const index = new Map<string, number>()
  for (const [i, h] of hosts.entries()) {
    if (typeof h !== 'string' || !HOST_NAME.test(h)) {
      throw new Error(`topology: bad host name ${JSON.stringify(h)} (want ${HOST_NAME})`)
    }
    if (index.has(h)) throw new Error(`topology: host ${h} listed twice`)
    index.set(h, i)
  }
  const rtt = hosts.map(() => hosts.map(() => 0))
  for (const [key, ms] of Object.entries(spec.rtt ?? {})) {
    // Host names may contain '-': the key must split into two known hosts in one way only.
    const splits: Array<[number, number]> = []
    for (let k = key.indexOf('-'); k !== -1; k = key.indexOf('-', k + 1)) {
      const a = index.get(key.slice(0, k))
      const b = index.get(key.slice(k + 1))
      if (a != null && b != null) splits.push([a, b])
    }
    if (splits.length !== 1) {
      throw new Error(`topology: rtt key ${JSON.stringify(key)} is not "<host>-<host>"`)
    }
    const [a, b] = splits[0]
    if (a === b) throw new Error(`topology: rtt key ${key} names one host twice`)
    checkRtt(ms, key)
    rtt[a][b] = ms
    rtt[b][a] = ms
  }
  return rtt
}

function checkRtt(ms: unknown, what: string): asserts ms is number {
  if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0 || ms > MAX_RTT_MS) {
    throw new Error(`topology: RTT of ${what} must be 0 to ${MAX_RTT_MS} ms, not ${ms}`)
  }
}

/** Runs a command to its end; throws with its stderr when it fails. */
function sh(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS })
  if (r.status !== 0) {
    const why = r.error?.message ?? r.stderr.trim()
    throw new Error(`${cmd} ${args.join(' ')} failed: ${why}`)
  }
  return r.stdout
}

/** The network namespaces on the machine (`ip netns list`). */
export function listNetns(): string[] {
  const r = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8', timeout: COMMAND_TIMEOUT_MS })
  return (r.stdout ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n !== '')
}

/** Kills every process left in a namespace and deletes it (synchronous: usable at exit). */
function removeNetns(netns: string): void {
  for (const pid of pidsIn(netns)) killQuietly(pid, 'SIGKILL')
  spawnSync('ip', ['netns', 'delete', netns], { timeout: COMMAND_TIMEOUT_MS })
}

/**
 * Removes the namespaces (and the processes in them) of harness runs whose process is
 * gone, e.g. one killed with SIGKILL. Returns the names removed.
 */
export function sweepStale(): string[] {
  const removed = listNetns().filter((name) => ofDeadRun(name, NETNS_PREFIX))
  for (const name of removed) removeNetns(name)
  return removed
}

/** Topologies not yet destroyed, removed at exit and on signals. */
const live = new ExitReaper<Topology>()

let topologySeq = 0

/**
 * N simulated hosts, each a network namespace with one WAN interface (a TUN device) at
 * 10.99.0.(i+1)/24, joined by a user-space forwarder (src/forwarder.py, in a namespace
 * of its own) that holds every packet for the pair's one-way delay (RTT / 2).
 */
export class Topology {
  readonly hosts: readonly string[]
  /** The namespace of the forwarder. */
  readonly routerNetns: string
  private readonly index: Map<string, number>
  private readonly rttMs: number[][]
  private readonly netnsNames: string[]
  private readonly procs = new Set<Proc>()
  private forwarder?: ChildProcess
  private forwarderExited?: Promise<void>
  private readonly replies: Array<(line: string | Error) => void> = []
  private forwarderError?: Error
  private destroying?: Promise<void>
  private destroyed = false

  private constructor(spec: TopologySpec) {
    this.rttMs = parseSpec(spec)
    this.hosts = [...spec.hosts]
    this.index = new Map(spec.hosts.map((h, i) => [h, i]))
    const base = `${NETNS_PREFIX}${process.pid}-${topologySeq++}`
    this.routerNetns = base
    this.netnsNames = spec.hosts.map((h) => `${base}-${h}`)
  }

  /** Builds the topology; on failure removes whatever it had made. */
  static async create(spec: TopologySpec): Promise<Topology> {
    sweepStale()
    const t = new Topology(spec)
    live.add(t)
    try {
      await t.build()
    } catch (err) {
      await t.destroy()
      throw err
    }
    return t
  }

  /** Builds a topology from a JSON file holding a {@link TopologySpec}. */
  static async fromFile(path: string): Promise<Topology> {
    return await Topology.create(JSON.parse(await readFile(path, 'utf8')) as TopologySpec)
  }

  private async build(): Promise<void> {
    const n = this.hosts.length
    sh('ip', ['netns', 'add', this.routerNetns])
    for (const ns of this.netnsNames) sh('ip', ['netns', 'add', ns])
    const fwd = spawn(
      'ip',
      ['netns', 'exec', this.routerNetns, PYTHON, FORWARDER, String(n), SUBNET_PREFIX],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    )
    this.forwarder = fwd
    let stderr = ''
    fwd.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr = (stderr + d).slice(-4000)
    })
    this.forwarderExited = new Promise((ok) => {
      fwd.on('close', (code, signal) => {
        this.forwarderError = new Error(
          `forwarder exited (${code ?? signal})${stderr !== '' ? `: ${stderr.trim()}` : ''}`,
        )
        for (const reply of this.replies.splice(0)) reply(this.forwarderError)
        ok()
      })
    })
    fwd.stdin.on('error', () => {
      // EPIPE after the forwarder died: reported through forwarderError
    })
    let buffered = ''
    fwd.stdout.setEncoding('utf8').on('data', (d: string) => {
      buffered += d
      for (let nl = buffered.indexOf('\n'); nl !== -1; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        this.replies.shift()?.(line)
      }
    })
    // Not keeping the process alive by itself: an undestroyed topology is removed at exit.
    fwd.unref()
    for (const s of [fwd.stdin, fwd.stdout, fwd.stderr]) (s as unknown as { unref(): void }).unref()

    const ready = await this.reply()
    if (ready !== 'ready') throw new Error(`forwarder: unexpected "${ready}"`)
    for (const [i, ns] of this.netnsNames.entries()) {
      const dev = `${WAN_IF_PREFIX}${i}`
      // The open TUN file descriptor keeps working after the device moves.
      sh('ip', ['-n', this.routerNetns, 'link', 'set', dev, 'netns', ns])
      sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up'])
      sh('ip', ['-n', ns, 'link', 'set', dev, 'addrgenmode', 'none']) // no IPv6 chatter
      sh('ip', ['-n', ns, 'addr', 'add', `${this.addressOf(i)}/24`, 'dev', dev])
      sh('ip', ['-n', ns, 'link', 'set', dev, 'up'])
    }
    for (let a = 0; a < n; a++) {
      for (let b = a + 1; b < n; b++) await this.applyRtt(a, b)
    }
  }

  /** The next line from the forwarder, within FORWARDER_TIMEOUT_MS. */
  private reply(): Promise<string> {
    if (this.forwarderError != null) return Promise.reject(this.forwarderError)
    return new Promise((ok, fail) => {
      const timer = setTimeout(() => {
        const i = this.replies.indexOf(onLine)
        if (i !== -1) this.replies.splice(i, 1)
        fail(new Error(`forwarder did not answer within ${FORWARDER_TIMEOUT_MS} ms`))
      }, FORWARDER_TIMEOUT_MS)
      const onLine = (line: string | Error) => {
        clearTimeout(timer)
        if (line instanceof Error) fail(line)
        else ok(line)
      }
      this.replies.push(onLine)
    })
  }

  private async command(cmd: string): Promise<string> {
    if (this.destroying != null) throw new Error('topology: destroyed')
    const answer = this.reply()
    this.forwarder?.stdin?.write(`${cmd}\n`)
    const line = await answer
    if (!line.startsWith('ok')) throw new Error(`forwarder: ${cmd}: ${line}`)
    return line.slice(2).trim()
  }

  private async applyRtt(a: number, b: number): Promise<void> {
    const oneWay = this.rttMs[a][b] / 2
    await this.command(`delay ${a} ${b} ${oneWay}`)
    await this.command(`delay ${b} ${a} ${oneWay}`)
  }

  private indexOf(host: string): number {
    const i = this.index.get(host)
    if (i == null) throw new Error(`topology: no host ${JSON.stringify(host)}`)
    return i
  }

  private addressOf(i: number): string {
    return `${SUBNET_PREFIX}${i + 1}`
  }

  /** The host's IPv4 address on the simulated WAN. */
  address(host: string): string {
    return this.addressOf(this.indexOf(host))
  }

  /** The host's network namespace name (for `ip netns exec NAME`). */
  netns(host: string): string {
    return this.netnsNames[this.indexOf(host)]
  }

  /** The host's namespace file, for `nsenter --net=PATH` (dockerd needs it: see README). */
  netnsPath(host: string): string {
    return `/var/run/netns/${this.netns(host)}`
  }

  /** The host's WAN interface (a TUN device) inside its namespace. */
  wanIf(host: string): string {
    return `${WAN_IF_PREFIX}${this.indexOf(host)}`
  }

  /** The configured RTT (ms) between two hosts. */
  rtt(a: string, b: string): number {
    return this.rttMs[this.indexOf(a)][this.indexOf(b)]
  }

  /** Changes the RTT of one pair now; packets already held keep their delay. */
  async setRtt(a: string, b: string, ms: number): Promise<void> {
    const i = this.indexOf(a)
    const j = this.indexOf(b)
    if (i === j) throw new Error('topology: setRtt needs two hosts')
    checkRtt(ms, `${a}-${b}`)
    this.rttMs[i][j] = ms
    this.rttMs[j][i] = ms
    await this.applyRtt(i, j)
  }

  /** Drops every packet from or to the host (silently, as a cut cable), including queued ones. */
  async cut(host: string): Promise<void> {
    await this.command(`cut ${this.indexOf(host)}`)
  }

  /** Reconnects a host cut off with {@link cut}. */
  async restore(host: string): Promise<void> {
    await this.command(`restore ${this.indexOf(host)}`)
  }

  /** The forwarder's counters (forwarded, dropped_*, max_queued, max_late_ms, queued). */
  async stats(): Promise<Record<string, number>> {
    return JSON.parse(await this.command('stats')) as Record<string, number>
  }

  private argv(host: string, cmd: string, args: string[]): string[] {
    // An mtc binary by name, as `pnpm exec` finds it; anything else from PATH.
    const file = cmd.includes('/') || !existsSync(binPath(cmd)) ? cmd : binPath(cmd)
    return ['netns', 'exec', this.netns(host), file, ...args]
  }

  /**
   * Starts a process inside the host's namespace (with `ip netns exec`, which also
   * remounts /sys: start dockerd with `nsenter --net=<netnsPath>` instead). It is
   * stopped by {@link destroy} at the latest.
   */
  spawn(host: string, cmd: string, args: string[], options: { env?: NodeJS.ProcessEnv } = {}) {
    if (this.destroying != null) throw new Error('topology: destroyed')
    const proc = run('ip', this.argv(host, cmd, args), { env: options.env })
    this.procs.add(proc)
    void proc.exited.then(() => this.procs.delete(proc))
    return proc
  }

  /** Runs a command inside the host's namespace to its end. */
  async exec(
    host: string,
    cmd: string,
    args: string[],
    options: { env?: NodeJS.ProcessEnv; stdin?: string; timeoutMs?: number } = {},
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    return await runToEnd('ip', this.argv(host, cmd, args), {
      timeoutMs: COMMAND_TIMEOUT_MS,
      ...options,
    })
  }

  /** GETs a URL from inside the host's namespace (e.g. a daemon's metrics on 127.0.0.1). */
  async httpGet(
    host: string,
    url: string,
    timeoutMs = 5_000,
  ): Promise<{ status: number; body: string }> {
    const r = await this.exec(host, PYTHON, [PROBE, 'http', url, String(timeoutMs)], {
      timeoutMs: timeoutMs + COMMAND_TIMEOUT_MS,
    })
    const nl = r.stdout.indexOf('\n')
    const status = Number(nl === -1 ? r.stdout : r.stdout.slice(0, nl))
    if (r.code !== 0 || !Number.isInteger(status) || status === 0) {
      throw new Error(`GET ${url} in ${host} failed: ${r.stdout.slice(nl + 1)}${r.stderr}`.trim())
    }
    return { status, body: r.stdout.slice(nl + 1) }
  }

  /**
   * `count` sequential GETs of `path` on `address:port` from inside the host's namespace,
   * on one keep-alive connection (a new one after a failed request); the time of each is
   * measured there. A request without an answer has status 0 and `error`.
   */
  async fetch(
    host: string,
    address: string,
    port: number,
    path: string,
    { count = 1, timeoutMs = 15_000 } = {},
  ): Promise<HttpAnswer[]> {
    const r = await this.exec(
      host,
      PYTHON,
      [PROBE, 'fetch', address, String(port), path, String(count), String(timeoutMs)],
      { timeoutMs: count * timeoutMs + COMMAND_TIMEOUT_MS },
    )
    const answers = r.stdout
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => JSON.parse(l) as HttpAnswer)
    if (r.code !== 0 || answers.length !== count) {
      throw new Error(`GET ${path} in ${host} failed (${r.code}): ${r.stderr.trim()}`)
    }
    return answers
  }

  /**
   * An open-loop stream of GETs from inside the host: one every `intervalMs` for
   * `durationMs`, each on a connection of its own and with its own `timeoutMs` (a slow
   * answer does not hold up the next request). `done` resolves, once every request has
   * ended, with the answers in the order they were sent; `stop` ends it early;
   * `answered()` counts the answers so far (the stream's process starts late on a loaded
   * machine: wait for answers, not for time, before acting on the traffic).
   */
  fetchStream(
    host: string,
    address: string,
    port: number,
    path: string,
    { intervalMs = 50, durationMs = 10_000, timeoutMs = 30_000 } = {},
  ): { done: Promise<StreamAnswer[]>; stop: () => Promise<void>; answered: () => number } {
    const proc = this.spawn(host, PYTHON, [
      PROBE,
      'stream',
      address,
      String(port),
      path,
      String(intervalMs),
      String(durationMs),
      String(timeoutMs),
    ])
    // Bounded by the probe itself; the kill is a safety net.
    const limit = setTimeout(() => proc.child.kill('SIGKILL'), durationMs + timeoutMs + 15_000)
    const done = proc.exited.then((code) => {
      clearTimeout(limit)
      const answers = proc
        .stdout()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as StreamAnswer)
        .sort((a, b) => a.i - b.i)
      if (code !== 0) {
        throw new Error(`GET stream ${path} in ${host} ended with ${code}: ${proc.stderr().trim()}`)
      }
      return answers
    })
    done.catch(() => {}) // the caller awaits it
    return {
      done,
      stop: async () => {
        await proc.stop(1_000)
      },
      answered: () =>
        proc
          .stdout()
          .split('\n')
          .filter((l) => l.startsWith('{')).length,
    }
  }

  /** Starts a UDP echo in the host; resolves with its port and how to stop it. */
  private async startEcho(host: string): Promise<{ port: number; stop: () => Promise<void> }> {
    const proc = this.spawn(host, PYTHON, [
      PROBE,
      'echo',
      this.address(host),
      String(ECHO_MAX_LIFETIME_S),
    ])
    const stop = async () => {
      await proc.stop(1000)
    }
    try {
      let port: number | undefined
      for (let i = 0; i < FORWARDER_TIMEOUT_MS / 20 && port == null; i++) {
        const m = /^ready (\d+)$/m.exec(proc.stdout())
        if (m != null) port = Number(m[1])
        else if (proc.child.exitCode != null) break
        else await sleep(20)
      }
      if (port == null) throw new Error(`echo in ${host} did not start: ${proc.stderr()}`)
      return { port, stop }
    } catch (err) {
      await stop()
      throw err
    }
  }

  private async probe(from: string, to: string, port: number, count: number) {
    const r = await this.exec(from, PYTHON, [
      PROBE,
      'ping',
      this.address(to),
      String(port),
      String(count),
      String(PROBE_INTERVAL_MS),
      String(PROBE_TIMEOUT_MS),
    ])
    if (r.code !== 0) throw new Error(`probe ${from}→${to} failed: ${r.stderr}`)
    const samples = JSON.parse(r.stdout) as {
      rtts: Array<number | null>
      base: Array<number | null>
    }
    const got = answered(samples.rtts)
    const configuredMs = this.rtt(from, to)
    const medianMs = median(got)
    // What the base probes took beyond the RTT the forwarder gave them.
    const baseMs = Math.max(0, median(answered(samples.base)) - BASE_PROBE_RTT_MS)
    return {
      a: from,
      b: to,
      configuredMs,
      medianMs,
      minMs: got[0] ?? Number.NaN,
      maxMs: got.at(-1) ?? Number.NaN,
      lost: samples.rtts.length - got.length,
      baseMs,
      attempts: 1,
      ok: got.length > 0 && rttWithinTolerance(medianMs, configuredMs, baseMs),
    }
  }

  /** Probes until in tolerance, {@link MeasureOptions.attempts} times at most. */
  private async probeUntilOk(
    from: string,
    to: string,
    port: number,
    { count = PROBE_COUNT, attempts = RTT_ATTEMPTS }: MeasureOptions,
  ): Promise<RttMeasurement> {
    let m = await this.probe(from, to, port, count)
    for (let i = 2; i <= attempts && !m.ok; i++) {
      m = { ...(await this.probe(from, to, port, count)), attempts: i }
    }
    return m
  }

  /**
   * Measures the RTT between two hosts with UDP probes (median, min, max, lost, base),
   * again when out of tolerance (see {@link MeasureOptions}); the last measurement.
   */
  async measureRtt(a: string, b: string, options: MeasureOptions = {}): Promise<RttMeasurement> {
    const echo = await this.startEcho(b)
    try {
      return await this.probeUntilOk(a, b, echo.port, options)
    } finally {
      await echo.stop()
    }
  }

  /** Measures every pair (in parallel) and compares each with the configured matrix. */
  async measureMatrix(options: MeasureOptions = {}): Promise<RttMeasurement[]> {
    const echoes = new Map<string, { port: number; stop: () => Promise<void> }>()
    try {
      for (const h of this.hosts) echoes.set(h, await this.startEcho(h))
      const pairs: Array<[string, string]> = []
      for (const [i, a] of this.hosts.entries()) {
        for (const b of this.hosts.slice(i + 1)) pairs.push([a, b])
      }
      return await Promise.all(
        pairs.map(([a, b]) => this.probeUntilOk(a, b, echoes.get(b)!.port, options)),
      )
    } finally {
      await Promise.all([...echoes.values()].map((e) => e.stop()))
    }
  }

  /**
   * Stops every process spawned in the hosts (SIGTERM, then SIGKILL), kills whatever else
   * runs in the namespaces, stops the forwarder and deletes the namespaces. Idempotent.
   */
  async destroy(): Promise<void> {
    this.destroying ??= this.teardown()
    return await this.destroying
  }

  private async teardown(): Promise<void> {
    await Promise.all([...this.procs].map((p) => p.stop(STOP_GRACE_MS)))
    const fwd = this.forwarder
    if (fwd != null && fwd.exitCode == null && fwd.signalCode == null) {
      fwd.stdin?.end() // the forwarder ends on EOF; its TUN devices vanish with it
      const timer = setTimeout(() => fwd.kill('SIGKILL'), FORWARDER_TIMEOUT_MS)
      await this.forwarderExited
      clearTimeout(timer)
    }
    this.destroySync()
  }

  /** The synchronous part of {@link destroy}, also run at exit and on signals. */
  destroySync(): void {
    if (this.destroyed) return
    this.destroyed = true
    live.delete(this)
    this.destroying ??= Promise.resolve()
    for (const p of this.procs) p.child.kill('SIGKILL')
    this.forwarder?.kill('SIGKILL')
    for (const ns of [...this.netnsNames, this.routerNetns]) removeNetns(ns)
  }

  /** The forwarder's process ID while it runs (for leak checks). */
  get forwarderPid(): number | undefined {
    return this.forwarder?.pid
  }

  /** The namespace names this topology uses (for leak checks). */
  allNetns(): string[] {
    return [this.routerNetns, ...this.netnsNames]
  }
}
