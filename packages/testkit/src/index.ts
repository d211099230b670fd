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
  child: ChildProcess
  /** Everything written to stdout/stderr so far. */
  stdout(): string
  stderr(): string
  /** Resolves with the exit code (or 128+signal) when the process ends. */
  exited: Promise<number>
  /** SIGTERM, then SIGKILL after `graceMs`; resolves with the exit code. */
  stop(graceMs?: number): Promise<number>
  kill(): Promise<number>
}

/** Every process spawned and not yet ended, so `stopAll` can end strays after a test. */
const running = new Set<Proc>()

/** Spawns a binary (a path, a name under node_modules/.bin, or on PATH) with captured output. */
export function run(
  cmd: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; stdin?: string } = {},
): Proc {
  // An mtc binary by name, as `pnpm exec` finds it; anything else from PATH.
  const file = cmd.includes('/') || !existsSync(binPath(cmd)) ? cmd : binPath(cmd)
  const child = spawn(file, args, {
    cwd: options.cwd ?? REPO_ROOT,
    env: { ...process.env, ...options.env },
    stdio: [options.stdin != null ? 'pipe' : 'ignore', 'pipe', 'pipe'],
  })
  if (options.stdin != null) child.stdin?.end(options.stdin)
  let out = ''
  let err = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    out += d
  })
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    err += d
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
    async stop(graceMs = 10_000) {
      if (child.exitCode == null && child.signalCode == null) {
        child.kill('SIGTERM')
        const t = setTimeout(() => child.kill('SIGKILL'), graceMs)
        try {
          return await exited
        } finally {
          clearTimeout(t)
        }
      }
      return await exited
    },
    async kill() {
      if (child.exitCode == null && child.signalCode == null) child.kill('SIGKILL')
      return await exited
    },
  }
  running.add(proc)
  return proc
}

/** Runs a command to its end and returns its code and output. */
export async function runToEnd(
  cmd: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; cwd?: string; stdin?: string; timeoutMs?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = run(cmd, args, options)
  const timer = setTimeout(() => p.child.kill('SIGKILL'), options.timeoutMs ?? 30_000)
  try {
    const code = await p.exited
    return { code, stdout: p.stdout(), stderr: p.stderr() }
  } finally {
    clearTimeout(timer)
  }
}

/** Kills whatever a test left running. */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop(2000)))
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
export async function httpGet(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5000) })
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
  const lines = await readLinesWhenReady(addrFile, options.timeoutMs ?? 30_000).catch(
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
