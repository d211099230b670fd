import { rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  DAEMON_STOP_GRACE_MS,
  freePort,
  httpGet,
  metricValue,
  type Proc,
  readLinesWhenReady,
  run,
  runToEnd,
  tempDir,
  waitFor,
} from './index.ts'

/**
 * The mesh launcher: starts mtc daemons as processes, each once it is ready (listening,
 * and per kind serving), and stops them all in the reverse order of a mesh's start —
 * client proxies, allocators, hl-services, bootstraps. Where a daemon runs is a
 * {@link Place}: this machine (tests, benches, the quickstart) or a simulated host (the
 * topology's mesh).
 */

/** The mtc daemons of a mesh. */
export type DaemonKind = 'bootstrap' | 'hl-service' | 'allocator' | 'proxy'

export const DAEMON_BINARY: Record<DaemonKind, string> = {
  bootstrap: 'ping-monitor',
  'hl-service': 'hl-service',
  allocator: 'allocator',
  proxy: 'proxy',
}

/** The order {@link Launcher.stop} stops daemons in: what asks for work before what serves it. */
const STOP_ORDER: DaemonKind[] = ['proxy', 'allocator', 'hl-service', 'bootstrap']

/** Starts of a LocalMesh daemon whose free port was taken meanwhile (see LocalMesh.start). */
export const PORT_ATTEMPTS = 3

/** A daemon answers on its addr file and endpoints within this (a loaded 2-core machine). */
export const DAEMON_READY_TIMEOUT_MS = 30_000

/** Where daemons run: how to start a binary there and GET a URL from there. */
export interface Place {
  spawn(bin: string, args: string[], env?: NodeJS.ProcessEnv): Proc
  httpGet(url: string, timeoutMs: number): Promise<{ status: number; body: string }>
}

/** This machine. */
export const LOCAL: Place = {
  spawn: (bin, args, env) => run(bin, args, { env }),
  httpGet: (url) => httpGet(url),
}

/** What a daemon is started with; kept, so that a restart reuses identity and flags. */
export interface DaemonPlan {
  kind: DaemonKind
  /** Its flags, `--addr-file` included (the launcher waits for that file). */
  args: string[]
  addrFile: string
  /** `host:port` of its metrics as seen from its place: hl-service is ready once etcd is up. */
  metrics?: string
  /** A proxy's gateway port on 127.0.0.1: it is ready once the gateway answers. */
  gateway?: number
  place?: Place
  /** The executable (default the kind's mtc binary): e.g. a baseline build to compare with. */
  bin?: string
  /** Added to its environment (e.g. NODE_OPTIONS for a CPU profile). */
  env?: NodeJS.ProcessEnv
  /** How errors name it, e.g. `proxy on h3` (default its kind). */
  name?: string
  timeoutMs?: number
  /** Runs right after the process is spawned (e.g. to renice it). */
  onSpawn?: (proc: Proc) => void
}

/** A daemon of a launcher: started, stopped and restarted with its plan. */
export class LaunchedDaemon {
  readonly plan: DaemonPlan
  proc?: Proc
  /** Its first multiaddr and peer ID, once it has listened. */
  addr = ''
  peerId = ''

  constructor(plan: DaemonPlan) {
    this.plan = plan
  }

  get name(): string {
    return this.plan.name ?? this.plan.kind
  }

  /** The port of its metrics (from {@link DaemonPlan.metrics}). */
  get metricsPort(): number | undefined {
    const port = this.plan.metrics?.split(':').at(-1)
    return port != null ? Number(port) : undefined
  }

  get running(): boolean {
    const c = this.proc?.child
    return c != null && c.exitCode == null && c.signalCode == null
  }

  /** Its stderr so far. */
  log(): string {
    return this.proc?.stderr() ?? ''
  }

  /** Starts it unless it runs and resolves once it is ready; fails with its log if it exits. */
  async start(): Promise<void> {
    if (this.running) return
    const { plan } = this
    const place = plan.place ?? LOCAL
    const timeoutMs = plan.timeoutMs ?? DAEMON_READY_TIMEOUT_MS
    await rm(plan.addrFile, { force: true })
    const proc = place.spawn(plan.bin ?? DAEMON_BINARY[plan.kind], plan.args, plan.env)
    this.proc = proc
    plan.onSpawn?.(proc)
    const failed = (why: string) =>
      new Error(`${this.name} did not start: ${why}\n${proc.stderr().trim().slice(-3000)}`)
    const exited = proc.exited.then((code) => {
      throw failed(`exited with ${code}`)
    })
    exited.catch(() => {})
    const ready = async () => {
      const lines = await readLinesWhenReady(plan.addrFile, timeoutMs)
      this.addr = lines[0]
      this.peerId = lines[0].split('/p2p/')[1] ?? ''
      if (plan.kind === 'hl-service' && plan.metrics != null) {
        const url = `http://${plan.metrics}/metrics`
        await waitFor(
          `etcd of ${this.name}`,
          async () => metricValue((await place.httpGet(url, 2_000)).body, 'mtc_hl_etcd_up') === 1,
          { timeoutMs, intervalMs: 200 },
        )
      } else if (plan.kind === 'proxy' && plan.gateway != null) {
        const url = `http://127.0.0.1:${plan.gateway}/`
        await waitFor(
          `the gateway of ${this.name}`,
          async () => (await place.httpGet(url, 2_000)).status > 0,
          { timeoutMs, intervalMs: 200 },
        )
      }
    }
    try {
      await Promise.race([ready(), exited])
    } catch (err) {
      throw err instanceof Error && err.message.includes('did not start')
        ? err
        : failed((err as Error).message)
    }
  }

  /** SIGTERM, SIGKILL to its group after `graceMs`; safe when it is not running. */
  async stop(graceMs = DAEMON_STOP_GRACE_MS): Promise<void> {
    await this.proc?.stop(graceMs)
  }
}

/** The daemons of one mesh, stopped together. */
export class Launcher {
  readonly daemons: LaunchedDaemon[] = []
  private stopping?: Promise<void>

  /** Adds a daemon without starting it. */
  add(plan: DaemonPlan): LaunchedDaemon {
    if (this.stopping != null) throw new Error('launcher: stopped')
    const d = new LaunchedDaemon(plan)
    this.daemons.push(d)
    return d
  }

  /** Adds a daemon and starts it (see {@link LaunchedDaemon.start}). */
  async start(plan: DaemonPlan): Promise<LaunchedDaemon> {
    const d = this.add(plan)
    await d.start()
    return d
  }

  /**
   * Stops every daemon, client proxies first and bootstraps last, those of a kind at
   * once (SIGTERM, SIGKILL after `graceMs`). Idempotent: a second call waits for the first.
   */
  async stop(graceMs = DAEMON_STOP_GRACE_MS): Promise<void> {
    this.stopping ??= (async () => {
      for (const kind of STOP_ORDER) {
        const of = this.daemons.filter((d) => d.plan.kind === kind)
        await Promise.all(of.map((d) => d.stop(graceMs)))
      }
    })()
    await this.stopping
  }

  /** SIGKILL to every daemon's group at once (synchronous: for exit and signal handlers). */
  killSync(): void {
    for (const d of this.daemons) d.proc?.child.kill('SIGKILL')
  }
}

export interface LocalMeshOptions {
  /**
   * The swarm key file's text (`formatSwarmKey(psk)` of @mtc/p2pnode); default a fresh
   * one from `mtc-keygen` (testkit does not depend on the mesh's packages).
   */
  swarmKey?: string
  /** Of its temporary directory. */
  prefix?: string
  /** Every daemon's --log-level (default: the daemons' own). */
  logLevel?: string
}

/**
 * A mesh on this machine's loopback, in a temporary directory with its swarm key: each
 * daemon listens and serves its metrics on ports the OS picks, joins every bootstrap
 * started before it, and an allocator or proxy is pointed at the hl-service if one runs.
 * `stop` stops them all (see {@link Launcher.stop}) and removes the directory.
 */
export class LocalMesh {
  readonly launcher = new Launcher()
  readonly dir: string
  readonly pskFile: string
  readonly bootstraps: LaunchedDaemon[] = []
  hl?: LaunchedDaemon
  private readonly logLevel?: string
  private seq = 0
  private stopping?: Promise<void>

  private constructor(dir: string, logLevel: string | undefined) {
    this.dir = dir
    this.pskFile = join(dir, 'swarm.key')
    this.logLevel = logLevel
  }

  static async create(options: LocalMeshOptions = {}): Promise<LocalMesh> {
    const { path } = await tempDir(options.prefix ?? 'mtc-mesh-')
    const mesh = new LocalMesh(path, options.logLevel)
    if (options.swarmKey != null) {
      await writeFile(mesh.pskFile, options.swarmKey, { mode: 0o600 })
    } else {
      const keygen = await runToEnd('mtc-keygen', ['swarm-key', '--out', mesh.pskFile])
      if (keygen.code !== 0) throw new Error(`mtc-keygen swarm-key failed: ${keygen.stderr}`)
    }
    return mesh
  }

  /** The first bootstrap's multiaddr. */
  get bootstrap(): string {
    const b = this.bootstraps[0]
    if (b == null) throw new Error('mesh: no bootstrap started')
    return b.addr
  }

  /** The flags that make a process a peer of this mesh: swarm key and bootstraps. */
  joined(): string[] {
    return ['--psk-file', this.pskFile, ...this.bootstraps.flatMap((b) => ['--bootstrap', b.addr])]
  }

  /** `--hl` of the mesh's hl-service, if one runs. */
  hlFlag(): string[] {
    return this.hl != null ? ['--hl', this.hl.addr] : []
  }

  /** A daemon's metrics URL (`http://127.0.0.1:PORT/metrics`). */
  metricsUrl(d: LaunchedDaemon): string {
    return `http://${d.plan.metrics}/metrics`
  }

  /** A fresh path in the mesh's directory. */
  path(name: string): string {
    return join(this.dir, `${name}-${this.seq++}`)
  }

  /**
   * Starts a daemon of this mesh with its flags, an addr file and metrics on a free port.
   * `args` may be a function, called again for each attempt: ports from {@link freePort}
   * can be taken by another process before the daemon binds them, so a start that fails
   * on a port in use is tried again ({@link PORT_ATTEMPTS} in all) with fresh ones.
   */
  async start(
    kind: DaemonKind,
    args: string[] | (() => Promise<string[]>),
    options: Pick<DaemonPlan, 'gateway' | 'bin' | 'env' | 'timeoutMs'> = {},
  ): Promise<LaunchedDaemon> {
    for (let attempt = 1; ; attempt++) {
      const metrics = `127.0.0.1:${await freePort()}`
      const addrFile = this.path(`${kind}.addr`)
      const common = ['--listen', '/ip4/127.0.0.1/tcp/0', '--metrics', metrics]
      common.push('--addr-file', addrFile)
      if (this.logLevel != null) common.push('--log-level', this.logLevel)
      const own = typeof args === 'function' ? await args() : args
      try {
        return await this.launcher.start({
          kind,
          args: [...this.joined(), ...common, ...own],
          addrFile,
          metrics,
          ...options,
        })
      } catch (err) {
        const inUse = /address already in use|EADDRINUSE/.test((err as Error).message)
        if (!inUse || attempt >= PORT_ATTEMPTS) throw err
      }
    }
  }

  /** A ping-monitor; later daemons take it as a bootstrap. */
  async startBootstrap(extra: string[] = []): Promise<LaunchedDaemon> {
    const d = await this.start('bootstrap', extra)
    this.bootstraps.push(d)
    return d
  }

  /** hl-service with an etcd of its own on free ports; resolves once etcd is up. */
  async startHlService(
    extra: string[] = [],
    dataDir = this.path('hl-data'),
  ): Promise<LaunchedDaemon> {
    let attempts = 0
    const d = await this.start('hl-service', async () => {
      // A retry starts a new cluster: what the failed etcd wrote names the old ports.
      if (attempts++ > 0) await rm(join(dataDir, 'etcd'), { recursive: true, force: true })
      return [
        '--data-dir',
        dataDir,
        '--new-etcd-cluster',
        '--etcd-client-port',
        String(await freePort()),
        '--etcd-peer-port',
        String(await freePort()),
        ...extra,
      ]
    })
    this.hl ??= d
    return d
  }

  /**
   * An allocator on this machine's Docker (`--host-ip 127.0.0.1`), told the hl-service
   * unless `hl` is false (then it finds one in the DHT).
   */
  async startAllocator(
    extra: string[] = [],
    { dataDir = this.path('alloc-data'), hl = true }: { dataDir?: string; hl?: boolean } = {},
  ): Promise<LaunchedDaemon> {
    const args = [...(hl ? this.hlFlag() : []), '--host-ip', '127.0.0.1', '--data-dir', dataDir]
    return await this.start('allocator', [...args, ...extra])
  }

  /**
   * A proxy: `positionals` are its own (`PORT [SERVICE TARGET]`), `gateway` the port it
   * answers HTTP on (ready once it does); told the hl-service unless `hl` is false;
   * `bin` and `env` as in {@link DaemonPlan}.
   */
  async startProxy(
    positionals: string[],
    extra: string[] = [],
    { hl = true, bin, env }: { hl?: boolean } & Pick<DaemonPlan, 'bin' | 'env'> = {},
  ): Promise<LaunchedDaemon> {
    const gateway = positionals[0] != null ? Number(positionals[0]) : undefined
    return await this.start('proxy', [...(hl ? this.hlFlag() : []), ...extra, ...positionals], {
      gateway,
      bin,
      env,
    })
  }

  /** Runs `hl-cli` against the mesh's hl-service. */
  async hlCli(args: string[], options: { timeoutMs?: number } = {}) {
    return await runToEnd('hl-cli', ['--psk-file', this.pskFile, ...this.hlFlag(), ...args], {
      timeoutMs: options.timeoutMs ?? 120_000,
    })
  }

  /** Stops every daemon (reverse order), then removes the directory. Idempotent. */
  async stop(): Promise<void> {
    this.stopping ??= (async () => {
      try {
        await this.launcher.stop()
      } finally {
        await rm(this.dir, { recursive: true, force: true })
      }
    })()
    await this.stopping
  }
}
