import { join } from 'node:path'
import {
  freePort,
  type LaunchedDaemon,
  LocalMesh,
  type Proc,
  REPO_ROOT,
  run,
  stopAll,
  waitFor,
} from '@mtc/testkit'
import { startNginxStatic } from './nginx.ts'

/**
 * The mesh the proxy benches measure (bench/src/proxy.ts, proxy-ab.ts), on loopback: a
 * bootstrap, hello-world-server and nginx serving a 1 KB file as the services, and proxies
 * started as the bench asks, each ready once its gateway answers. Built on testkit's
 * LocalMesh; `stop` ends the proxies in the launcher's order, then the services.
 */

const HELLO_BIN = join(REPO_ROOT, 'demos/helloworld/bin/hello-world-server.js')
const FLOOR_GATEWAY = join(import.meta.dirname, 'floor-gateway.ts')
/** hello-world-server's 1 KB response. */
export const SMALL = '/bytes/1024'
/** The file nginx serves: 1 KB. */
export const STATIC_FILE = '/1k'

export interface BenchMeshOptions {
  /** The proxy executable (an mtc bin by name, else from PATH); default the workspace's. */
  proxyBin?: string
  prefix?: string
}

/** Which proxy build and environment a proxy runs with (default the mesh's `proxyBin`). */
export interface ProxyBuild {
  bin?: string
  env?: NodeJS.ProcessEnv
}

export class BenchMesh {
  readonly mesh: LocalMesh
  readonly proxyBin: string
  helloPort = 0
  staticPort = 0
  private stopping?: Promise<void>

  private constructor(mesh: LocalMesh, proxyBin: string) {
    this.mesh = mesh
    this.proxyBin = proxyBin
  }

  get dir(): string {
    return this.mesh.dir
  }

  /** A proxy in front of `127.0.0.1:targetPort`, serving it as `service`. */
  async serviceProxy(
    service: string,
    targetPort: number,
    build: ProxyBuild = {},
  ): Promise<LaunchedDaemon> {
    const positionals = [String(await freePort()), service, `127.0.0.1:${targetPort}`]
    return await this.mesh.startProxy(positionals, [], this.build(build))
  }

  /** A client proxy; `port` is its gateway. */
  async clientProxy(build: ProxyBuild = {}): Promise<{ daemon: LaunchedDaemon; port: number }> {
    const port = await freePort()
    return { daemon: await this.mesh.startProxy([String(port)], [], this.build(build)), port }
  }

  /** A floor-gateway.ts process in `mode` in front of `serviceProxy`'s service (stopped
   * with the mesh); its port. */
  async floorGateway(
    mode: 'splice' | 'http',
    serviceProxy: LaunchedDaemon,
    env?: NodeJS.ProcessEnv,
  ): Promise<{ proc: Proc; port: number }> {
    const port = await freePort()
    const args = [FLOOR_GATEWAY, mode, String(port), serviceProxy.addr, this.mesh.pskFile]
    const proc = run(process.execPath, args, { env })
    let exited: number | undefined
    void proc.exited.then((code) => {
      exited = code
    })
    await waitFor(
      `the ${mode} floor gateway listening`,
      () => {
        if (exited != null) throw new Error(`exited ${exited}: ${proc.stderr()}`)
        return proc.stdout().includes('listening')
      },
      { timeoutMs: 30_000 },
    )
    return { proc, port }
  }

  /** Stops the mesh's daemons (launcher order), then the services, then removes its directory. */
  async stop(): Promise<void> {
    this.stopping ??= (async () => {
      try {
        await this.mesh.launcher.stop()
        await stopAll()
      } finally {
        await this.mesh.stop()
      }
    })()
    await this.stopping
  }

  private build({ bin, env }: ProxyBuild): { hl: false } & ProxyBuild {
    return { hl: false, bin: bin ?? this.proxyBin, env }
  }

  /** Starts the bootstrap and both services; on a failure stops what started. */
  static async start(options: BenchMeshOptions = {}): Promise<BenchMesh> {
    const mesh = await LocalMesh.create({
      prefix: options.prefix ?? 'mtc-bench-mesh-',
      logLevel: process.env.BENCH_LOG ?? 'error',
    })
    const bench = new BenchMesh(mesh, options.proxyBin ?? 'proxy')
    try {
      await mesh.startBootstrap()
      bench.helloPort = await freePort()
      const hello = run(HELLO_BIN, [String(bench.helloPort)], {
        env: { SERVICE_HOST: '127.0.0.1' },
      })
      await waitFor('hello listening', () => hello.stdout().includes('listening'))
      const statics = await startNginxStatic(join(mesh.dir, 'nginx-static'), {
        [STATIC_FILE.slice(1)]: Buffer.alloc(1024, 'x'),
      })
      bench.staticPort = statics.port
      return bench
    } catch (err) {
      await bench.stop()
      throw err
    }
  }
}

/** Starts a {@link BenchMesh}. */
export const startBenchMesh = (options: BenchMeshOptions = {}) => BenchMesh.start(options)
