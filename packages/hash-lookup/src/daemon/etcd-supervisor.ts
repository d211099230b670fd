/**
 * Runs a local single-member etcd as a child process (hl-service's `--new-etcd-cluster`):
 * starts it, waits until it is healthy, restarts it on its data directory when it dies, and
 * stops it gracefully.
 */

import { type ChildProcess, spawn } from 'node:child_process'
import { mkdir } from 'node:fs/promises'
import { createInterface } from 'node:readline'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  DEFAULT_ETCD_CLIENT_PORT,
  DEFAULT_ETCD_HOST,
  DEFAULT_ETCD_MEMBER_NAME,
  DEFAULT_ETCD_PEER_PORT,
  ETCD_HEALTH_POLL_MS,
  ETCD_HEALTH_TIMEOUT_MS,
  ETCD_RESTART_BACKOFF_MAX_MS,
  ETCD_RESTART_BACKOFF_MIN_MS,
  ETCD_STABLE_RUN_MS,
  ETCD_START_TIMEOUT_MS,
  ETCD_STOP_TIMEOUT_MS,
} from '../constants.ts'
import { EtcdStartError } from '../errors.ts'

export interface EtcdSupervisorInit {
  /** etcd's data directory; created (mode 0700) if missing, reused across restarts. */
  dataDir: string
  clientPort?: number
  peerPort?: number
  /** Address both ports listen on, default 127.0.0.1. */
  host?: string
  /** Member name, default `DEFAULT_ETCD_MEMBER_NAME`. */
  name?: string
  /** etcd executable, default `etcd` from PATH. */
  binary?: string
  startTimeoutMs?: number
  stopTimeoutMs?: number
  restartBackoffMinMs?: number
  restartBackoffMaxMs?: number
  /** Receives etcd's output lines and the supervisor's own notices. */
  log?: (message: string) => void
}

interface Exit {
  code: number | null
  signal: NodeJS.Signals | null
  error?: Error
}

interface Run {
  child: ChildProcess
  exited: Promise<Exit>
  startedAt: number
}

export class EtcdSupervisor {
  readonly endpoints: string[]
  readonly #args: string[]
  readonly #init: EtcdSupervisorInit
  readonly #clientUrl: string
  readonly #log: (message: string) => void
  #run?: Run
  #starting?: Promise<void>
  #stopping?: Promise<void>
  #restartTimer?: NodeJS.Timeout
  #nextBackoffMs: number
  #restarts = 0
  #lastLine = ''

  constructor(init: EtcdSupervisorInit) {
    const host = init.host ?? DEFAULT_ETCD_HOST
    const name = init.name ?? DEFAULT_ETCD_MEMBER_NAME
    const clientUrl = httpUrl(host, init.clientPort ?? DEFAULT_ETCD_CLIENT_PORT)
    const peerUrl = httpUrl(host, init.peerPort ?? DEFAULT_ETCD_PEER_PORT)
    this.#init = init
    this.#clientUrl = clientUrl
    this.#log = init.log ?? (() => {})
    this.#nextBackoffMs = init.restartBackoffMinMs ?? ETCD_RESTART_BACKOFF_MIN_MS
    this.endpoints = [clientUrl]
    // Every listener explicitly, so etcd opens no port but these two.
    this.#args = [
      `--name=${name}`,
      `--data-dir=${init.dataDir}`,
      `--listen-client-urls=${clientUrl}`,
      `--advertise-client-urls=${clientUrl}`,
      `--listen-peer-urls=${peerUrl}`,
      `--initial-advertise-peer-urls=${peerUrl}`,
      `--initial-cluster=${name}=${peerUrl}`,
      '--initial-cluster-state=new',
      '--logger=zap', // 3.4 defaults to the deprecated capnslog and warns about it
    ]
  }

  /** Process ID of the current etcd, if one runs. */
  get pid(): number | undefined {
    return this.#run?.child.pid
  }

  /** How many times etcd was restarted after dying. */
  get restarts(): number {
    return this.#restarts
  }

  /** Starts etcd and resolves once it answers /health; throws EtcdStartError otherwise. */
  start(): Promise<void> {
    this.#starting ??= this.#start()
    return this.#starting
  }

  async #start(): Promise<void> {
    // etcd warns about (and later versions refuse) a data directory others can read.
    await mkdir(this.#init.dataDir, { recursive: true, mode: 0o700 })
    const run = this.#spawn()
    try {
      await this.#waitHealthy(run, this.#init.startTimeoutMs ?? ETCD_START_TIMEOUT_MS)
    } catch (err) {
      await this.#terminate(run)
      this.#run = undefined
      throw err
    }
    // Watched only now: a death before this point is start()'s failure, not a restart.
    this.#watch(run)
  }

  /** SIGTERM, then SIGKILL after the stop timeout. Final; safe to call more than once. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      clearTimeout(this.#restartTimer)
      if (this.#run) await this.#terminate(this.#run)
    })()
    return this.#stopping
  }

  /** Whether etcd answers /health now. */
  async healthy(): Promise<boolean> {
    try {
      const response = await fetch(`${this.#clientUrl}/health`, {
        signal: AbortSignal.timeout(ETCD_HEALTH_TIMEOUT_MS),
      })
      const body = (await response.json()) as { health?: unknown }
      return response.ok && body.health === 'true'
    } catch {
      return false
    }
  }

  #spawn(): Run {
    // ETCD_* variables would override or conflict with the flags above.
    const env = Object.fromEntries(
      Object.entries(process.env).filter(([key]) => !key.startsWith('ETCD_')),
    )
    const child = spawn(this.#init.binary ?? 'etcd', this.#args, {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const exited = new Promise<Exit>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }))
      // Spawn failures (e.g. no etcd on PATH) emit 'error' and may never emit 'exit'.
      child.once('error', (error) => resolve({ code: null, signal: null, error }))
    })
    for (const output of [child.stdout, child.stderr]) {
      // Always read, or etcd blocks once the pipe buffer is full.
      createInterface({ input: output! }).on('line', (line) => {
        this.#lastLine = line
        this.#log(line)
      })
    }
    const run: Run = { child, exited, startedAt: Date.now() }
    this.#run = run
    return run
  }

  #watch(run: Run): void {
    void run.exited.then((exit) => this.#onExit(run, exit))
  }

  async #waitHealthy(run: Run, timeoutMs: number): Promise<void> {
    let exit: Exit | undefined
    void run.exited.then((e) => {
      exit = e
    })
    const deadline = Date.now() + timeoutMs
    while (Date.now() < deadline) {
      if (exit) {
        throw new EtcdStartError(`etcd ${describeExit(exit)} while starting: ${this.#lastLine}`, {
          cause: exit.error,
        })
      }
      if (await this.healthy()) return
      await sleep(ETCD_HEALTH_POLL_MS)
    }
    throw new EtcdStartError(`etcd did not become healthy within ${timeoutMs} ms`)
  }

  #onExit(run: Run, exit: Exit): void {
    if (this.#stopping || run !== this.#run) return
    const minMs = this.#init.restartBackoffMinMs ?? ETCD_RESTART_BACKOFF_MIN_MS
    const maxMs = this.#init.restartBackoffMaxMs ?? ETCD_RESTART_BACKOFF_MAX_MS
    const delayMs = Date.now() - run.startedAt >= ETCD_STABLE_RUN_MS ? minMs : this.#nextBackoffMs
    this.#nextBackoffMs = Math.min(delayMs * 2, maxMs)
    this.#log(`etcd ${describeExit(exit)} unexpectedly; restarting in ${delayMs} ms`)
    this.#restartTimer = setTimeout(() => {
      this.#restarts++
      this.#watch(this.#spawn())
    }, delayMs)
  }

  async #terminate(run: Run): Promise<void> {
    const { child, exited } = run
    if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
    child.kill('SIGTERM')
    const timeoutMs = this.#init.stopTimeoutMs ?? ETCD_STOP_TIMEOUT_MS
    const timer = new AbortController()
    const inTime = await Promise.race([
      exited.then(() => true),
      sleep(timeoutMs, false, { signal: timer.signal }).catch(() => false),
    ])
    timer.abort()
    if (!inTime) {
      this.#log(`etcd did not exit within ${timeoutMs} ms of SIGTERM; killing it`)
      child.kill('SIGKILL')
      await exited
    }
  }
}

function httpUrl(host: string, port: number): string {
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`
}

function describeExit(exit: Exit): string {
  if (exit.error) return `failed to run (${exit.error.message})`
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`
}
