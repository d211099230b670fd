import { spawnSync } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { type Proc, run, runToEnd, waitFor } from '@mtc/testkit'
import {
  COMMAND_TIMEOUT_MS,
  DOCKER_CALL_TIMEOUT_MS,
  DOCKERD_READY_TIMEOUT_MS,
  DOCKERD_STOP_GRACE_MS,
  MESH_DIR_PREFIX,
} from './constants.ts'
import { cpuWeight, killQuietly, ofDeadRun, setNice } from './processes.ts'

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
  /** The cgroup (below every controller's root) the host's containers run in. */
  readonly cgroup: string
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
    // mtc-m-<pid>-<seq>-<host>: named after the run, so a dead run's are swept.
    this.cgroup = `${basename(dirname(init.dir))}-${init.host}`
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
    const cgroupParent = makeCpuCgroup(this.cgroup, CONTAINER_SLOTS * cpuWeight(this.nice ?? 0))
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
      ...(cgroupParent ? ['--cgroup-parent', `/${this.cgroup}`] : []),
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
    removeCgroup(this.cgroup)
  }

  /** The daemon's stderr so far (its log, errors only). */
  log(): string {
    return this.proc?.stderr() ?? ''
  }
}

/** cgroup v1's controllers, each mounted at CGROUP_ROOT/<name>. */
const CGROUP_ROOT = '/sys/fs/cgroup'

/**
 * The CPU weight of a host's containers, in daemons: an instance is two busy processes
 * (its proxy and the service), so two instances at the daemons' priority.
 */
const CONTAINER_SLOTS = 4

/**
 * A cpu cgroup `/name` with `shares`, for a dockerd's `--cgroup-parent`; false when this
 * is not cgroup v1 (or not root). By default all containers of every dockerd share one
 * cgroup, /docker, weighing as much as ONE nice-0 process against everything else on
 * the machine: the instances of 12 simulated hosts got together what one daemon got, and
 * answered their peers seconds late. Each host's containers get a weight of their own.
 */
function makeCpuCgroup(name: string, shares: number): boolean {
  const dir = join(CGROUP_ROOT, 'cpu', name)
  try {
    if (!existsSync(join(CGROUP_ROOT, 'cpu', 'cpu.shares'))) return false
    mkdirSync(dir, { recursive: true })
    writeFileSync(join(dir, 'cpu.shares'), String(shares))
    return true
  } catch {
    return false
  }
}

/** Removes `/name` from every controller (runc made it in each); empty once dockerd is gone. */
function removeCgroup(name: string): void {
  let controllers: string[] = []
  try {
    controllers = readdirSync(CGROUP_ROOT)
  } catch {
    return
  }
  for (const c of controllers) {
    const dir = join(CGROUP_ROOT, c, name)
    if (!existsSync(dir)) continue
    // A container's own cgroup below it is gone with the container; try it first anyway.
    try {
      for (const sub of readdirSync(dir, { withFileTypes: true })) {
        if (sub.isDirectory()) rmdirSync(join(dir, sub.name))
      }
      rmdirSync(dir)
    } catch {
      // still in use (a container outlived its daemon): the sweep of a later run retries
    }
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
  // The per-host cgroups of dead runs (`mtc-m-<pid>-<seq>-<host>`).
  try {
    for (const name of readdirSync(join(CGROUP_ROOT, 'cpu'))) {
      if (ofDeadRun(name, MESH_DIR_PREFIX)) removeCgroup(name)
    }
  } catch {
    // no cgroup v1 cpu controller
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
