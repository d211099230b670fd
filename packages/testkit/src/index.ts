import { type ChildProcess, spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

/** The repository root (packages/testkit/dist/src → four levels up). */
export const REPO_ROOT = resolve(import.meta.dirname, '../../../..')

/** The launcher of an mtc binary as `pnpm exec` would run it. */
export function binPath(name: string): string {
  return join(REPO_ROOT, 'node_modules', '.bin', name)
}

/**
 * Polls `check` until it returns a value other than undefined/false, at most
 * `timeoutMs`; throws with `what` and the last error otherwise.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  { timeoutMs = 10_000, intervalMs = 100 } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let lastError: unknown
  for (let i = 0; Date.now() < deadline && i < 100_000; i++) {
    try {
      const value = await check()
      if (value !== undefined && value !== false) return value as T
    } catch (err) {
      lastError = err
    }
    await sleep(intervalMs)
  }
  const reason = lastError != null ? `: ${(lastError as Error).message}` : ''
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${reason}`)
}

/** A TCP port free on 127.0.0.1 right now (the OS picks it). */
export async function freePort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok))
  const { port } = server.address() as { port: number }
  await new Promise<void>((ok) => server.close(() => ok()))
  return port
}

/** A fresh temporary directory and its removal. */
export async function tempDir(
  prefix = 'mtc-test-',
): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, remove: () => rm(path, { recursive: true, force: true }) }
}

export interface Proc {
  /** The process, leader of a process group of its own (with what it starts). */
  child: ChildProcess
  /** Everything written to stdout/stderr so far. */
  stdout(): string
  stderr(): string
  /** Resolves with the exit code (or 128+signal) when the process ends. */
  exited: Promise<number>
  /**
   * SIGTERM to the process (it stops what it started, as a daemon does), SIGKILL to its
   * whole group after `graceMs` (default {@link DAEMON_STOP_GRACE_MS}), and once it has
   * ended, SIGKILL to whatever it left in its group (an hl-service's etcd, a script's
   * background jobs); resolves with the exit code.
   */
  stop(graceMs?: number): Promise<number>
  /** SIGKILL to the whole group. */
  kill(): Promise<number>
}

/**
 * SIGTERM→SIGKILL grace for a daemon: they stop gracefully within 10 s
 * (SHUTDOWN_TIMEOUT_MS of @mtc/p2pnode) and then exit by themselves; 2 s more for a busy
 * machine.
 */
export const DAEMON_STOP_GRACE_MS = 12_000

/** Every process spawned and not yet ended, so `stopAll` can end strays after a test. */
const running = new Set<Proc>()

/** Signals the process group led by `child` (spawned detached); quiet if it is gone. */
function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid == null) return
  try {
    process.kill(-child.pid, signal)
  } catch {
    // the group is empty
  }
}

let reaperInstalled = false

/**
 * The groups are detached from the terminal's, so a Ctrl-C no longer reaches them: at
 * exit and on SIGINT/SIGTERM/SIGHUP, SIGTERM to every group still running (a daemon then
 * stops gracefully by itself). After a signal, with nobody else listening, this process
 * dies of it as the default action would.
 */
function installReaper(): void {
  if (reaperInstalled) return
  reaperInstalled = true
  const reap = () => {
    for (const p of running) signalGroup(p.child, 'SIGTERM')
  }
  process.on('exit', reap)
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      reap()
      process.removeListener(signal, onSignal)
      if (process.listenerCount(signal) === 0) process.kill(process.pid, signal)
    }
    process.on(signal, onSignal)
  }
}

/**
 * Spawns a binary (a path, a name under node_modules/.bin, or on PATH) with captured
 * output: all of it, or its last `keepOutput` characters of each stream.
 */
export function run(
  cmd: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; stdin?: string; keepOutput?: number } = {},
): Proc {
  // An mtc binary by name, as `pnpm exec` finds it; anything else from PATH.
  const file = cmd.includes('/') || !existsSync(binPath(cmd)) ? cmd : binPath(cmd)
  installReaper()
  // A process group of its own: stop/kill/runToEnd reach what it starts too.
  const child = spawn(file, args, {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdio: [options.stdin != null ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    detached: true,
  })
  if (options.stdin != null) child.stdin?.end(options.stdin)
  let out = ''
  let err = ''
  const keep = options.keepOutput ?? Number.POSITIVE_INFINITY
  const tail = (s: string) => (s.length > keep ? s.slice(-keep) : s)
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out = tail(out + d)
  })
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err = tail(err + d)
  })
  const exited = new Promise<number>((resolve) => {
    child.on('close', (code, signal) => {
      running.delete(proc)
      resolve(code ?? 128 + (signal === 'SIGKILL' ? 9 : 15))
    })
  })
  const proc: Proc = {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    async stop(graceMs = DAEMON_STOP_GRACE_MS) {
      // Once the process has ended, what it left in its group goes too (it may hold the
      // output pipes open, which would keep `exited` waiting).
      const sweep = () => signalGroup(child, 'SIGKILL')
      if (child.exitCode != null || child.signalCode != null) {
        sweep()
        return await exited
      }
      child.once('exit', sweep)
      child.kill('SIGTERM')
      const t = setTimeout(sweep, graceMs)
      try {
        return await exited
      } finally {
        clearTimeout(t)
      }
    },
    async kill() {
      signalGroup(child, 'SIGKILL')
      return await exited
    },
  }
  running.add(proc)
  return proc
}

/**
 * Runs a command to its end and returns its code and output. After `timeoutMs` it is
 * stopped as {@link Proc.stop} does (SIGTERM, so that it can remove what it made — the
 * topology CLI its namespaces, the quickstart its containers —, SIGKILL to its whole
 * group after `graceMs`).
 */
export async function runToEnd(
  cmd: string,
  args: string[],
  options: {
    env?: NodeJS.ProcessEnv
    cwd?: string
    stdin?: string
    timeoutMs?: number
    graceMs?: number
  } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = run(cmd, args, options)
  const timer = setTimeout(() => void p.stop(options.graceMs), options.timeoutMs ?? 30_000)
  try {
    const code = await p.exited
    return { code, stdout: p.stdout(), stderr: p.stderr() }
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Stops whatever a test left running, each as {@link Proc.stop} does: a daemon gets its
 * graceful-stop time, then its group is killed.
 */
export async function stopAll(): Promise<void> {
  // No parameter: `after(stopAll)` passes the test context.
  await Promise.all([...running].map((p) => p.stop(DAEMON_STOP_GRACE_MS)))
}

/** Waits until `path` exists and has at least one line; returns its lines. */
export async function readLinesWhenReady(path: string, timeoutMs = 15_000): Promise<string[]> {
  return await waitFor(
    `${path} to be written`,
    async () => {
      const lines = (await readFile(path, 'utf8')).split('\n').filter((l) => l !== '')
      return lines.length > 0 ? lines : undefined
    },
    { timeoutMs },
  )
}

/** GETs a URL on loopback and returns status and body text. */
export async function httpGet(
  url: string,
  timeoutMs = 5000,
): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) })
  return { status: res.status, body: await res.text() }
}

/** The value of a Prometheus sample `name{labels}` in exposition text, if present. */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m == null || m[1] !== name) continue
    const have = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => [
        x[1],
        x[2],
      ]),
    )
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) return Number(m[3])
  }
  return undefined
}

export * from './docker.ts'
export * from './needs.ts'

let daemonSeq = 0

/**
 * Starts an mtc daemon with `--addr-file` in `dir` and resolves once it listens, with its
 * first multiaddr and peer ID; a daemon that does not come up fails with its stderr.
 */
export async function startDaemon(
  bin: string,
  args: string[],
  dir: string,
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<{ proc: Proc; addr: string; peerId: string }> {
  const addrFile = join(dir, `${bin}-${daemonSeq++}.addr`)
  const proc = run(bin, [...args, '--addr-file', addrFile], { env: options.env })
  // 60 s: an allocator took over 30 s to listen while the 2 shared cores ran at load 40.
  const lines = await readLinesWhenReady(addrFile, options.timeoutMs ?? 60_000).catch(
    (err: Error) => {
      throw new Error(`${bin} did not start: ${err.message}\n${proc.stderr()}`)
    },
  )
  return { proc, addr: lines[0], peerId: lines[0].split('/p2p/')[1] }
}

/** A daemon's flags for loopback only: overlay and metrics on any free port. */
export function loopbackDaemonArgs(pskFile: string): string[] {
  return ['--psk-file', pskFile, '--listen', '/ip4/127.0.0.1/tcp/0', '--metrics', '127.0.0.1:0']
}

/** A ping-monitor on a random loopback port: the bootstrap most tests need. */
export async function startBootstrap(pskFile: string, dir: string, extra: string[] = []) {
  return await startDaemon('ping-monitor', [...loopbackDaemonArgs(pskFile), ...extra], dir)
}
export * from './launcher.ts'
