import { spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type Proc, run, runToEnd, waitFor } from '@mtc/testkit'
import {
  COMMAND_TIMEOUT_MS,
  DOCKER_CALL_TIMEOUT_MS,
  DOCKERD_READY_TIMEOUT_MS,
  DOCKERD_STOP_GRACE_MS,
  MESH_DIR_PREFIX,
} from './constants.ts'
import { killQuietly, ofDeadRun, setNice } from './processes.ts'

/**
 * A Docker daemon of its own inside one simulated host: started with `nsenter --net` (not
 * `ip netns exec`, which remounts /sys and breaks dockerd's cgroups), so containers with
 * host networking live in the host's namespace. No bridge, no iptables; storage under
 * `dir`, run-time state under the short `execRoot` (unix socket paths are limited to 107
 * bytes and containerd puts its socket below it).
 */
export class HostDockerd {
  readonly host: string
  readonly socket: string
  private readonly netnsPath: string
  private readonly dataRoot: string
  private readonly execRoot: string
  private readonly pidFile: string
  private readonly configFile: string
  private readonly nice?: number
  private proc?: Proc

  constructor(init: {
    host: string
    netnsPath: string
    dir: string
    execRoot: string
    /** Niceness of the daemon (set at once, so containerd and the containers inherit it). */
    nice?: number
  }) {
    this.host = init.host
    this.nice = init.nice
    this.netnsPath = init.netnsPath
    this.dataRoot = join(init.dir, 'data')
    this.execRoot = init.execRoot
    this.socket = join(init.dir, 'docker.sock')
    this.pidFile = join(init.dir, 'dockerd.pid')
    this.configFile = join(init.dir, 'daemon.json')
  }

  /** `-H unix://…` for the docker CLI, or `DOCKER_HOST`. */
  get address(): string {
    return `unix://${this.socket}`
  }

  get running(): boolean {
    const c = this.proc?.child
    return c != null && c.exitCode == null && c.signalCode == null
  }

  /** Starts the daemon and waits until it answers. */
  async start(): Promise<void> {
    if (this.running) return
    await mkdir(this.dataRoot, { recursive: true })
    // An empty configuration: /etc/docker/daemon.json of the machine must not apply.
    await writeFile(this.configFile, '{}\n')
    const proc = run('nsenter', [
      `--net=${this.netnsPath}`,
      'dockerd',
      '--data-root',
      this.dataRoot,
      '--exec-root',
      this.execRoot,
      '--host',
      this.address,
      '--pidfile',
      this.pidFile,
      '--config-file',
      this.configFile,
      '--storage-driver',
      'overlay2',
      '--bridge=none',
      '--iptables=false',
      '--ip6tables=false',
      '--log-level',
      'error',
    ])
    this.proc = proc
    if (this.nice != null) setNice(proc, this.nice)
    await waitFor(
      `dockerd in ${this.host}`,
      async () => {
        if (!this.running) throw new Error(`exited: ${proc.stderr().trim().slice(-2000)}`)
        return (await this.docker(['version', '--format', '{{.Server.Version}}'], true)).code === 0
      },
      { timeoutMs: DOCKERD_READY_TIMEOUT_MS, intervalMs: 100 },
    )
  }

  /** Runs `docker -H <this daemon> ARGS`; throws on failure unless `allowFail`. */
  async docker(args: string[], allowFail = false, timeoutMs = DOCKER_CALL_TIMEOUT_MS) {
    const r = await runToEnd('docker', ['-H', this.address, ...args], { timeoutMs })
    if (r.code !== 0 && !allowFail) {
      throw new Error(`docker ${args[0]} in ${this.host} failed (${r.code}): ${r.stderr.trim()}`)
    }
    return r
  }

  /** Force-removes every container of this daemon, so none outlives it. */
  async removeAllContainers(): Promise<void> {
    if (!this.running) return
    const ids = (await this.docker(['ps', '-aq'], true)).stdout.split('\n').filter((l) => l !== '')
    if (ids.length > 0) await this.docker(['rm', '-f', '-v', ...ids], true)
  }

  /** SIGKILL, as a crash: containers go on running under containerd's shims. */
  async kill(): Promise<void> {
    await this.proc?.kill()
  }

  /** SIGKILL without waiting (at exit). */
  killSync(): void {
    this.proc?.child.kill('SIGKILL')
  }

  /** Removes the containers, then SIGTERM (stops its containerd too), SIGKILL after a grace. */
  async stop(): Promise<void> {
    await this.removeAllContainers().catch(() => {})
    await this.proc?.stop(DOCKERD_STOP_GRACE_MS)
  }

  /** The daemon's stderr so far (its log, errors only). */
  log(): string {
    return this.proc?.stderr() ?? ''
  }
}

/** Mount points at or below `dir`, deepest first (from the root mount namespace's table). */
function mountsBelow(dir: string): string[] {
  const table = readFileSync('/proc/self/mountinfo', 'utf8')
  return table
    .split('\n')
    .map((line) => line.split(' ')[4]?.replace(/\\040/g, ' '))
    .filter((m): m is string => m != null && (m === dir || m.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length)
}

/**
 * Unmounts whatever a daemon left under `dir` (overlay2 layers, containerd's netns
 * files) and removes it. Synchronous: also used at exit.
 */
export function unmountAndRemove(dir: string): void {
  for (let round = 0; round < 3; round++) {
    const mounts = mountsBelow(dir)
    if (mounts.length === 0) break
    for (const m of mounts) spawnSync('umount', ['-l', m], { timeout: COMMAND_TIMEOUT_MS })
  }
  if (existsSync(dir)) rmSync(dir, { recursive: true, force: true })
}

/** The mesh directories (`/tmp/mtc-m-<pid>-…`) are named after the process that made them. */
export function meshDirPrefix(): string {
  return join(tmpdir(), MESH_DIR_PREFIX)
}

/**
 * Removes the directories of mesh runs whose process is gone (killed with SIGKILL, say):
 * their dockerds (found by pid file, checked by command line) are killed, their mounts
 * undone. The processes inside a dead run's namespaces go with `Topology`'s own sweep.
 */
export function sweepStaleMeshDirs(): string[] {
  const base = tmpdir()
  const removed = readdirSync(base)
    .filter((name) => ofDeadRun(name, MESH_DIR_PREFIX))
    .map((name) => join(base, name))
  for (const dir of removed) {
    killDockerdsUnder(dir)
    unmountAndRemove(dir)
  }
  return removed
}

/** SIGKILLs the dockerds whose pid files lie one level below `dir`, if still theirs. */
function killDockerdsUnder(dir: string): void {
  let entries: string[] = []
  try {
    entries = readdirSync(dir)
  } catch {
    return
  }
  for (const e of entries) {
    const pidFile = join(dir, e, 'dockerd.pid')
    if (!existsSync(pidFile)) continue
    const pid = Number(readFileSync(pidFile, 'utf8').trim())
    if (!Number.isInteger(pid) || pid <= 0) continue
    let cmdline = ''
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    } catch {
      continue // gone
    }
    if (cmdline.includes(dir)) killQuietly(pid, 'SIGKILL')
  }
}
