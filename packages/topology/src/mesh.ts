import { existsSync, readFileSync, rmSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { LABEL_MANAGED_BY, LABEL_PEER_ID, LABEL_PORTS, LABEL_SERVICE } from '@mtc/allocator/client'
import { formatSwarmKey, generatePsk, loadOrCreateKey } from '@mtc/p2pnode'
import {
  type DaemonKind,
  docker,
  ensureImages,
  type LaunchedDaemon,
  Launcher,
  metricValue,
  type Place,
  type Proc,
} from '@mtc/testkit'
import {
  COMMAND_TIMEOUT_MS,
  DAEMON_READY_TIMEOUT_MS,
  DOCKER_CALL_TIMEOUT_MS,
  GATEWAY_PORT,
  INSTANCE_PORT_RANGE,
  MESH_DISCOVERY_TIMEOUT_MS,
  MESH_PING_INTERVAL,
  MESH_PORTS,
  STOP_GRACE_MS,
} from './constants.ts'
import { HostDockerd, meshDirPrefix, sweepStaleMeshDirs, unmountAndRemove } from './dockerd.ts'
import { ExitReaper, pidsIn, setNice } from './processes.ts'
import { type HttpAnswer, sweepStale, Topology, type TopologySpec } from './topology.ts'

/** The demo service every scenario runs (built by scripts/build-images.sh). */
export const HELLO_IMAGE = 'mtc/hello-world-server:1.0'

/** The mtc daemons of a mesh; `dockerd` is each allocator host's own Docker daemon. */
export type Daemon = DaemonKind
export type Component = Daemon | 'dockerd'

/** A service registered with hl-service once the mesh is up. */
export interface ServiceSpec {
  name: string
  /** Default {@link HELLO_IMAGE}; must exist in the machine's main Docker daemon. */
  image?: string
  softRttMs?: number
  hardRttMs?: number
  /**
   * Upload the `docker save` tarball to hl-service (default true), so an allocator whose
   * daemon lacks the image fetches it over the overlay; false registers the image ID only.
   */
  upload?: boolean
  /** Further `hl-cli add` flags, e.g. scaling settings `['--concurrency', '2']`. */
  addFlags?: string[]
}

export interface MeshSpec {
  /** Hosts and RTTs (the mesh builds and destroys the topology), or a topology to use. */
  topology: TopologySpec | Topology
  /** Runs the first bootstrap (ping-monitor) and the hl-service with its own etcd. */
  registry: string
  /** Hosts running a further, redundant bootstrap each (all bootstraps know each other). */
  bootstraps?: string[]
  /** Hosts with a dockerd of their own and an allocator on it. */
  allocators: string[]
  /** Hosts with a client proxy on 127.0.0.1:4200. */
  clients: string[]
  /** Allocator hosts whose dockerd gets the services' images up front (default: all). */
  preload?: string[]
  services?: ServiceSpec[]
  /** The daemons' --log-level (default error: little output, little CPU). */
  logLevel?: string
  /** Extra flags per daemon kind, e.g. `{ proxy: ['--allocation-timeout', '30s'] }`. */
  extraArgs?: Partial<Record<Daemon, string[]>>
  /** Extra flags for one host's daemons, after extraArgs: `{ near: { allocator: [...] } }`. */
  hostArgs?: Record<string, Partial<Record<Daemon, string[]>>>
  /** The bootstraps' probe `--interval` (default MESH_PING_INTERVAL, 10s: the proxies measure). */
  pingInterval?: string
  /**
   * Client hosts from which a DHT lookup must find every allocator and the hl-service
   * before the client proxies start (default: every client). Each check is a node
   * process of its own: with many clients, one per region is enough (the DHT is one).
   */
  discoverFrom?: string[]
  /**
   * Niceness of every daemon and dockerd (as root, negative raises their priority). The
   * simulated hosts share this machine's cores, which a real host has to itself: on a
   * loaded machine a CPU-starved daemon answers a liveness ping after 2 s, and its peers
   * cut the connection as dead (see README, 30 hosts). Default: inherited.
   */
  nice?: number
}

/** A container an allocator started, as its host's dockerd lists it. */
export interface Instance {
  host: string
  id: string
  name: string
  service: string
  /** The instance proxy's peer ID (the allocator gives it its identity). */
  peerId: string
  /** The allocator that manages it (its peer ID). */
  allocator: string
  /** proxy, service, metrics and overlay port, as the allocator assigned them. */
  ports: number[]
  running: boolean
}

/** Where requests went: per instance, how many it answered (its inbound counter's rise). */
export interface Served {
  host: string
  peerId: string
  service: string
  requests: number
}

/** A planned daemon: where, its identity fixed up front, and its process (the launcher's). */
interface DaemonState {
  host: string
  kind: Daemon
  peerId: string
  addr: string
  daemon: LaunchedDaemon
}

/**
 * Meshes not yet destroyed, removed at exit and on signals. Topology's handlers (installed
 * earlier) have killed everything in the namespaces by then; what is left are the
 * dockerds' mounts and directories, and the saved images.
 */
const live = new ExitReaper<Mesh>(() => rmSync(imageDir(), { recursive: true, force: true }))
let meshSeq = 0

/** `docker save` tarballs, once per process and image (removed at exit). */
function imageDir(): string {
  return `${meshDirPrefix()}${process.pid}-images`
}
const savedImages = new Map<string, Promise<string>>()

function saveImage(image: string): Promise<string> {
  let saved = savedImages.get(image)
  if (saved == null) {
    saved = (async () => {
      const present = await docker(['image', 'inspect', image], { allowFail: true })
      if (present.code !== 0) await ensureImages()
      await mkdir(imageDir(), { recursive: true })
      const tar = join(imageDir(), `${image.replace(/[^A-Za-z0-9_.-]/g, '_')}.tar`)
      await docker(['save', '-o', tar, image], { timeoutMs: DOCKER_CALL_TIMEOUT_MS })
      return tar
    })()
    savedImages.set(image, saved)
    saved.catch(() => savedImages.delete(image))
  }
  return saved
}

/** The sum of every sample of a counter or gauge, whatever its labels. */
export function metricSum(text: string, name: string): number {
  let sum = 0
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m != null && m[1] === name) sum += Number(m[3])
  }
  return sum
}

/** The peer ID of an identity file, created (mode 0600) when missing. */
async function peerIdOf(keyFile: string): Promise<string> {
  return (await loadOrCreateKey(keyFile)).publicKey.toString()
}

/** The short-lived overlay node, from source or built (see src/overlay-client.ts). */
const OVERLAY_CLIENT = resolve(
  import.meta.dirname,
  import.meta.filename.endsWith('.ts') ? 'overlay-client.ts' : 'overlay-client.js',
)

/**
 * A whole mesh on a simulated WAN: per host the daemons a real deployment runs there, each
 * in the host's namespace and reachable at the host's address. See README "The mesh fixture".
 */
export class Mesh {
  readonly topo: Topology
  /** Everything on disk: keys, daemons' data, dockerds' data roots (short path). */
  readonly dir: string
  readonly pskFile: string
  readonly spec: MeshSpec
  private readonly ownsTopology: boolean
  private readonly daemons = new Map<string, DaemonState>()
  /** Starts and stops the daemons (in reverse order); the mesh adds the hosts around them. */
  private readonly launcher = new Launcher()
  private readonly dockerds = new Map<string, HostDockerd>()
  /** Milestones of the start-up, ms after {@link start} was called (for reports). */
  readonly timings: Record<string, number> = {}
  private startedAt = 0
  private destroying?: Promise<void>
  private destroyed = false

  private constructor(topo: Topology, ownsTopology: boolean, spec: MeshSpec, dir: string) {
    this.topo = topo
    this.ownsTopology = ownsTopology
    this.spec = spec
    this.dir = dir
    this.pskFile = join(dir, 'swarm.key')
  }

  /** Builds the topology (unless given one) and starts the mesh; on failure removes it all. */
  static async start(spec: MeshSpec): Promise<Mesh> {
    const startedAt = performance.now()
    // Dead runs: first the processes in their namespaces, then their dockerds' mounts.
    sweepStale()
    sweepStaleMeshDirs()
    const owns = !(spec.topology instanceof Topology)
    const topo =
      spec.topology instanceof Topology ? spec.topology : await Topology.create(spec.topology)
    const dir = `${meshDirPrefix()}${process.pid}-${meshSeq++}`
    const mesh = new Mesh(topo, owns, spec, dir)
    mesh.startedAt = startedAt
    live.add(mesh)
    try {
      await mesh.boot()
    } catch (err) {
      await mesh.destroy()
      throw err
    }
    return mesh
  }

  private mark(what: string): void {
    this.timings[what] = Math.round(performance.now() - this.startedAt)
  }

  private async boot(): Promise<void> {
    const { spec, topo } = this
    this.mark('topology')
    const hostsOf = [spec.registry, ...(spec.bootstraps ?? []), ...spec.allocators, ...spec.clients]
    for (const h of hostsOf) topo.address(h) // throws for an unknown host
    await mkdir(this.dir, { recursive: true, mode: 0o700 })
    await writeFile(this.pskFile, formatSwarmKey(generatePsk()), { mode: 0o600 })

    const bootHosts = [spec.registry, ...(spec.bootstraps ?? [])]
    for (const h of bootHosts) await this.plan(h, 'bootstrap')
    await this.plan(spec.registry, 'hl-service')
    for (const h of spec.allocators) await this.plan(h, 'allocator')
    for (const h of spec.clients) await this.plan(h, 'proxy')

    const images = [...new Set((spec.services ?? []).map((s) => s.image ?? HELLO_IMAGE))]
    const tars = Promise.all(images.map(saveImage))
    tars.then(() => this.mark('images saved')).catch(() => {}) // awaited below
    const dockerds = Promise.all(
      spec.allocators.map(async (h, i) => {
        const d = new HostDockerd({
          host: h,
          netnsPath: topo.netnsPath(h),
          dir: join(this.dir, h),
          execRoot: join(this.dir, `x${i}`),
          nice: spec.nice,
        })
        this.dockerds.set(h, d)
        await d.start()
      }),
    )
    dockerds.then(() => this.mark('dockerds')).catch(() => {})

    await Promise.all(bootHosts.map((h) => this.startDaemon(h, 'bootstrap')))
    this.mark('bootstraps')
    const registry = this.startDaemon(spec.registry, 'hl-service').then(() =>
      this.mark('hl-service'),
    )
    const allocators = (async () => {
      await dockerds
      const preload = spec.preload ?? spec.allocators
      const loaded = Promise.all(
        preload.map(async (h) => {
          for (const tar of await tars) await this.dockerd(h).docker(['load', '-q', '-i', tar])
        }),
      )
      loaded.catch(() => {}) // awaited below
      await Promise.all(spec.allocators.map((h) => this.startDaemon(h, 'allocator')))
      this.mark('allocators')
      await loaded
      this.mark('images loaded')
    })()
    // Registering (an upload of ~130 MB: seconds) overlaps the rest of the start.
    const registered = (async () => {
      await registry
      for (const s of spec.services ?? []) await this.register(s)
      this.mark('services registered')
    })()
    const discoverable = (async () => {
      await Promise.all([registry, allocators])
      await Promise.all((spec.discoverFrom ?? spec.clients).map((h) => this.waitDiscoverable(h)))
      this.mark('discoverable')
    })()
    await Promise.all([registry, allocators, registered, discoverable])
    await Promise.all(spec.clients.map((h) => this.startDaemon(h, 'proxy')))
    this.mark('client proxies')
  }

  private key(host: string, kind: Daemon): string {
    return `${host}/${kind}`
  }

  private state(host: string, kind: Daemon): DaemonState {
    const s = this.daemons.get(this.key(host, kind))
    if (s == null) throw new Error(`mesh: no ${kind} on ${host}`)
    return s
  }

  /** Fixes a daemon's identity, address and flags, so that a restart keeps them. */
  private async plan(host: string, kind: Daemon): Promise<void> {
    const { spec, topo } = this
    const ports = MESH_PORTS[kind]
    const base = join(this.dir, host, kind)
    await mkdir(base, { recursive: true, mode: 0o700 })
    const keyFile = join(base, 'identity.key')
    const peerId = await peerIdOf(keyFile)
    const addr = `/ip4/${topo.address(host)}/tcp/${ports.p2p}/p2p/${peerId}`
    const addrFile = join(base, 'addr')
    const args = [
      '--psk-file',
      this.pskFile,
      '--key-file',
      keyFile,
      '--listen',
      `/ip4/${topo.address(host)}/tcp/${ports.p2p}`,
      '--addr-file',
      addrFile,
      '--metrics',
      `127.0.0.1:${ports.metrics}`,
      '--log-level',
      spec.logLevel ?? 'error',
      ...(spec.extraArgs?.[kind] ?? []),
      ...(spec.hostArgs?.[host]?.[kind] ?? []),
    ]
    // Bootstraps are planned first: every later daemon knows all of them.
    const bootstraps = [...this.daemons.values()]
      .filter((d) => d.kind === 'bootstrap')
      .flatMap((d) => ['--bootstrap', d.addr])
    const hl = () => ['--hl', this.state(spec.registry, 'hl-service').addr]
    if (kind === 'bootstrap') {
      // Each bootstrap also dials the ones planned before it; the first one dials none.
      args.push('--interval', spec.pingInterval ?? MESH_PING_INTERVAL, ...bootstraps)
    } else if (kind === 'hl-service') {
      args.push(...bootstraps, '--data-dir', join(base, 'data'), '--new-etcd-cluster')
    } else if (kind === 'allocator') {
      args.push(
        ...bootstraps,
        ...hl(),
        '--host-ip',
        topo.address(host),
        '--port-range',
        INSTANCE_PORT_RANGE,
        '--docker-socket',
        join(this.dir, host, 'docker.sock'),
        '--data-dir',
        join(base, 'data'),
      )
    } else {
      args.push(...bootstraps, ...hl(), String(GATEWAY_PORT))
    }
    const nice = spec.nice
    const daemon = this.launcher.add({
      kind,
      args,
      addrFile,
      metrics: `127.0.0.1:${ports.metrics}`,
      gateway: kind === 'proxy' ? GATEWAY_PORT : undefined,
      place: this.place(host),
      name: `${kind} on ${host}`,
      timeoutMs: DAEMON_READY_TIMEOUT_MS,
      onSpawn: nice != null ? (proc) => setNice(proc, nice) : undefined,
    })
    this.daemons.set(this.key(host, kind), { host, kind, peerId, addr, daemon })
  }

  /** A host of the topology as a place for the launcher to run daemons in. */
  private place(host: string): Place {
    return {
      spawn: (bin, args) => this.topo.spawn(host, bin, args),
      httpGet: (url, timeoutMs) => this.topo.httpGet(host, url, timeoutMs),
    }
  }

  /** Starts a planned daemon and waits until it listens (and, per kind, is ready). */
  private async startDaemon(host: string, kind: Daemon): Promise<void> {
    await this.state(host, kind).daemon.start()
  }

  /**
   * Waits until a DHT lookup from `host` finds every allocator and the hl-service, so a
   * client proxy started there next knows them all from its first lookup on.
   */
  private async waitDiscoverable(host: string): Promise<void> {
    const allocators = this.spec.allocators.map((h) => this.peerId(h, 'allocator'))
    const hl = this.peerId(this.spec.registry, 'hl-service')
    const boots = [...this.daemons.values()].filter((d) => d.kind === 'bootstrap')
    const proc = this.topo.spawn(host, process.execPath, [
      OVERLAY_CLIENT,
      this.pskFile,
      String(MESH_DISCOVERY_TIMEOUT_MS),
      'discover',
      `allocator=${allocators.join(',')}`,
      `hash-lookup=${hl}`,
      '--',
      ...boots.map((b) => b.addr),
    ])
    // A peer of the mesh while it runs: as the daemons' priority, or it is starved.
    if (this.spec.nice != null) setNice(proc, this.spec.nice)
    const overdue = setTimeout(
      () => void proc.kill(),
      MESH_DISCOVERY_TIMEOUT_MS + COMMAND_TIMEOUT_MS,
    )
    const code = await proc.exited.finally(() => clearTimeout(overdue))
    const r = { code, stdout: proc.stdout(), stderr: proc.stderr() }
    if (r.code !== 0) {
      throw new Error(
        `from ${host} the DHT did not name every allocator (${allocators.join(', ')}) and ` +
          `the hl-service (${hl}): ${r.stdout.trim()} ${r.stderr.trim().slice(-2000)}`,
      )
    }
  }

  /** Registers (or replaces) a service with `hl-cli add` on the registry host. */
  async register(service: ServiceSpec): Promise<void> {
    const image = service.image ?? HELLO_IMAGE
    const args = ['add']
    if (service.upload === false) {
      const id = (await docker(['image', 'inspect', '-f', '{{.Id}}', image])).stdout.trim()
      args.push('--image-id', id)
    } else {
      args.push('--file', await saveImage(image))
    }
    if (service.softRttMs != null) args.push('--soft-rtt', String(service.softRttMs))
    if (service.hardRttMs != null) args.push('--hard-rtt', String(service.hardRttMs))
    args.push(...(service.addFlags ?? []))
    const r = await this.hlCli([...args, image, service.name])
    if (r.code !== 0) throw new Error(`hl-cli add ${service.name} failed (${r.code}): ${r.stderr}`)
  }

  /** Runs `hl-cli` against the mesh's hl-service from `host` (default the registry host). */
  async hlCli(args: string[], host = this.spec.registry) {
    const hl = this.state(this.spec.registry, 'hl-service').addr
    return await this.topo.exec(
      host,
      'hl-cli',
      ['--psk-file', this.pskFile, '--hl', hl, '--log-level', 'error', ...args],
      { timeoutMs: 120_000 },
    )
  }

  /** A daemon's peer ID (fixed for the mesh's life: restarts keep it). */
  peerId(host: string, kind: Daemon): string {
    return this.state(host, kind).peerId
  }

  /** A daemon's full multiaddr on the WAN. */
  addr(host: string, kind: Daemon): string {
    return this.state(host, kind).addr
  }

  /** The host of the daemon with this peer ID (an instance is not a daemon: see instances). */
  hostOfPeer(peerId: string): string | undefined {
    for (const d of this.daemons.values()) if (d.peerId === peerId) return d.host
    return undefined
  }

  /** A host's own Docker daemon (allocator hosts only). */
  dockerd(host: string): HostDockerd {
    const d = this.dockerds.get(host)
    if (d == null) throw new Error(`mesh: no dockerd on ${host}`)
    return d
  }

  /** A daemon's process (for its stderr, exit code...), while it has one. */
  proc(host: string, kind: Daemon): Proc | undefined {
    return this.state(host, kind).daemon.proc
  }

  /** A daemon's stderr so far; with `--log-level error`, its errors. */
  log(host: string, component: Component): string {
    if (component === 'dockerd') return this.dockerd(host).log()
    return this.state(host, component).daemon.log()
  }

  /**
   * Ends a component abruptly (default SIGKILL: a crash). A killed dockerd leaves its
   * containers running; a killed hl-service takes its etcd along (a crashed host would).
   */
  async kill(host: string, component: Component, signal: NodeJS.Signals = 'SIGKILL') {
    if (component === 'dockerd') {
      await this.dockerd(host).kill()
      return
    }
    const proc = this.state(host, component).daemon.proc
    if (proc == null) return
    // `ip netns exec` execs the binary, so the pid is the daemon's own.
    proc.child.kill(signal)
    await proc.exited
    if (component === 'hl-service') this.killStrays(host, join(this.dir, host, 'hl-service'))
  }

  /** Stops a component gracefully (SIGTERM; SIGKILL after a grace). */
  async stop(host: string, component: Component): Promise<void> {
    if (component === 'dockerd') {
      await this.dockerd(host).stop()
      return
    }
    await this.state(host, component).daemon.stop(STOP_GRACE_MS)
  }

  /** Stops a component if it runs, then starts it again with the same identity and flags. */
  async restart(host: string, component: Component): Promise<void> {
    await this.stop(host, component)
    await this.start(host, component)
  }

  /** Starts a component stopped or killed before (no-op if it runs). */
  async start(host: string, component: Component): Promise<void> {
    if (component === 'dockerd') await this.dockerd(host).start()
    else await this.startDaemon(host, component)
  }

  /**
   * Starts a daemon that was not in the spec: a new peer (fresh identity) joining the
   * running mesh through the bootstraps, with the same flags a planned one gets. `proxy`
   * (a client proxy, gateway on 127.0.0.1:4200 there) or `bootstrap`; allocators need a
   * dockerd and hl-service is one per mesh, so those only come from the spec.
   */
  async add(host: string, kind: 'proxy' | 'bootstrap'): Promise<void> {
    if (this.daemons.has(this.key(host, kind))) throw new Error(`mesh: ${kind} on ${host} exists`)
    this.topo.address(host) // throws for an unknown host
    await this.plan(host, kind)
    await this.startDaemon(host, kind)
  }

  /** SIGKILLs processes in the host whose command line names `marker` (orphans of a kill). */
  private killStrays(host: string, marker: string): void {
    for (const pid of pidsIn(this.topo.netns(host))) {
      try {
        if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker))
          process.kill(pid, 'SIGKILL')
      } catch {
        // gone
      }
    }
  }

  /**
   * GETs `/<service>/...` (any path) through the client proxy of `client` (default the
   * first client), from inside that host: `count` requests in a row on one connection.
   */
  async requests(
    path: string,
    count: number,
    { client = this.spec.clients[0], timeoutMs = 60_000 } = {},
  ): Promise<HttpAnswer[]> {
    return await this.topo.fetch(client, '127.0.0.1', GATEWAY_PORT, path, { count, timeoutMs })
  }

  /**
   * A steady, open-loop stream of GETs through a client proxy (see
   * {@link Topology.fetchStream}): one every `intervalMs` for `durationMs`, each with its
   * own `timeoutMs`; `done` gives every answer with its send time.
   */
  requestStream(
    path: string,
    {
      client = this.spec.clients[0],
      ...options
    }: { client?: string; intervalMs?: number; durationMs?: number; timeoutMs?: number } = {},
  ) {
    return this.topo.fetchStream(client, '127.0.0.1', GATEWAY_PORT, path, options)
  }

  /** One GET through a client proxy (see {@link requests}). */
  async request(path: string, options: { client?: string; timeoutMs?: number } = {}) {
    return (await this.requests(path, 1, options))[0]
  }

  /**
   * Requests as {@link requests}, and which instances answered them: every instance's
   * inbound request counter is read before and after (so run nothing else meanwhile).
   */
  async tracedRequests(
    path: string,
    count: number,
    options: { client?: string; timeoutMs?: number } = {},
  ): Promise<{ answers: HttpAnswer[]; servedBy: Served[] }> {
    const before = await this.inboundRequests()
    const answers = await this.requests(path, count, options)
    const after = await this.inboundRequests()
    const servedBy: Served[] = []
    for (const [peerId, a] of after) {
      const requests = a.requests - (before.get(peerId)?.requests ?? 0)
      if (requests > 0) servedBy.push({ ...a, requests })
    }
    return { answers, servedBy }
  }

  /**
   * Containers the allocator of `host` manages, as its dockerd lists them (`docker ps`
   * with the allocator's label); `all` includes stopped ones.
   */
  async containers(host: string, { service = '', all = false } = {}): Promise<Instance[]> {
    const d = this.dockerd(host)
    const filter = ['--filter', `label=${LABEL_MANAGED_BY}`]
    if (service !== '') filter.push('--filter', `label=${LABEL_SERVICE}=${service}`)
    const ps = await d.docker(['ps', '-q', ...(all ? ['-a'] : []), ...filter])
    const ids = ps.stdout.split('\n').filter((l) => l !== '')
    if (ids.length === 0) return []
    const inspect = await d.docker(['inspect', ...ids])
    type Inspect = {
      Id: string
      Name: string
      Config: { Labels: Record<string, string> }
      State: { Running: boolean }
    }
    return (JSON.parse(inspect.stdout) as Inspect[]).map((c) => ({
      host,
      id: c.Id,
      name: c.Name.replace(/^\//, ''),
      service: c.Config.Labels[LABEL_SERVICE] ?? '',
      peerId: c.Config.Labels[LABEL_PEER_ID] ?? '',
      allocator: c.Config.Labels[LABEL_MANAGED_BY] ?? '',
      ports: (c.Config.Labels[LABEL_PORTS] ?? '').split(',').map(Number),
      running: c.State.Running,
    }))
  }

  /** Running managed containers on every allocator host whose dockerd runs. */
  async instances(service = ''): Promise<Instance[]> {
    const hosts = [...this.dockerds.values()].filter((d) => d.running).map((d) => d.host)
    return (await Promise.all(hosts.map((h) => this.containers(h, { service })))).flat()
  }

  /** An instance's proxy metrics (`METRICS_PORT`, the third of its ports), from its host. */
  async instanceMetrics(instance: Instance): Promise<string> {
    const url = `http://127.0.0.1:${instance.ports[2]}/metrics`
    const r = await this.topo.httpGet(instance.host, url)
    if (r.status !== 200) throw new Error(`${url} in ${instance.host}: ${r.status}`)
    return r.body
  }

  /** Every running instance's count of requests it took from the mesh, by peer ID. */
  async inboundRequests(service = ''): Promise<Map<string, Served>> {
    const out = new Map<string, Served>()
    for (const i of await this.instances(service)) {
      const text = await this.instanceMetrics(i).catch(() => '')
      const requests = metricSum(text, 'mtc_proxy_inbound_requests_total')
      out.set(i.peerId, { host: i.host, peerId: i.peerId, service: i.service, requests })
    }
    return out
  }

  /** A daemon's /metrics, scraped from inside its host. */
  async metrics(host: string, kind: Daemon): Promise<string> {
    this.state(host, kind)
    const r = await this.topo.httpGet(host, `http://127.0.0.1:${MESH_PORTS[kind].metrics}/metrics`)
    if (r.status !== 200) throw new Error(`${kind} metrics in ${host}: ${r.status}`)
    return r.body
  }

  /** One sample of a daemon's metric (labels must match), if present. */
  async metric(host: string, kind: Daemon, name: string, labels: Record<string, string> = {}) {
    return metricValue(await this.metrics(host, kind), name, labels)
  }

  /**
   * Stops everything: the daemons (SIGTERM, SIGKILL after a grace), every container, the
   * dockerds; then the topology if the mesh made it, and its directory with whatever the
   * dockerds left mounted. Idempotent; also run (abruptly) at exit and on signals.
   */
  async destroy(): Promise<void> {
    this.destroying ??= this.teardown()
    return await this.destroying
  }

  private async teardown(): Promise<void> {
    try {
      // Clients and allocators first: nothing asks for new instances while they go.
      await this.launcher.stop(STOP_GRACE_MS)
      await Promise.all([...this.dockerds.values()].map((d) => d.stop()))
      if (this.ownsTopology) await this.topo.destroy()
    } finally {
      this.destroySync()
    }
  }

  /** The synchronous part of {@link destroy}: kills what is left, unmounts, removes. */
  destroySync(): void {
    if (this.destroyed) return
    this.destroyed = true
    live.delete(this)
    this.destroying ??= Promise.resolve()
    this.launcher.killSync()
    for (const d of this.dockerds.values()) d.killSync()
    if (this.ownsTopology) this.topo.destroySync()
    if (existsSync(this.dir)) unmountAndRemove(this.dir)
  }
}
