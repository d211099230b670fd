import { createHash, randomBytes } from 'node:crypto'
import { type Agent, type IncomingHttpHeaders, request } from 'node:http'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { formatSwarmKey, generatePsk } from '@mtc/p2pnode'
import {
  freePort,
  LocalMesh,
  metricValue,
  type Proc,
  REPO_ROOT,
  run,
  runToEnd,
  stopAll,
  waitFor,
} from '@mtc/testkit'

export const HELLO_BIN = join(REPO_ROOT, 'demos/helloworld/bin/hello-world-server.js')
export const CALLER_BIN = join(REPO_ROOT, 'demos/helloworld/bin/hello-caller.js')

export interface Answer {
  status: number
  headers: IncomingHttpHeaders
  body: Buffer
  reusedSocket: boolean
}

/** One HTTP request on loopback with node:http (raw paths, any method, any body). */
export function http(
  port: number,
  path: string,
  options: {
    method?: string
    headers?: Record<string, string | string[]>
    body?: Buffer | Readable
    agent?: Agent | false
    timeoutMs?: number
    /** Aborts the request early (the client going away), besides the timeout. */
    signal?: AbortSignal
  } = {},
): Promise<Answer> {
  const timeout = AbortSignal.timeout(options.timeoutMs ?? 15_000)
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: options.method ?? 'GET',
        headers: options.headers,
        agent: options.agent ?? false,
        signal: options.signal == null ? timeout : AbortSignal.any([timeout, options.signal]),
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks),
            reusedSocket: req.reusedSocket,
          }),
        )
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    if (options.body instanceof Readable) options.body.pipe(req)
    else req.end(options.body)
  })
}

/** `bytes` random bytes as a stream of 64 KiB chunks, with their SHA-256 once read. */
export function randomBody(bytes: number): { stream: Readable; sha256: () => string } {
  const hash = createHash('sha256')
  let left = bytes
  const stream = new Readable({
    read() {
      if (left === 0) {
        this.push(null)
        return
      }
      const chunk = randomBytes(Math.min(left, 64 * 1024))
      left -= chunk.byteLength
      hash.update(chunk)
      this.push(chunk)
    },
  })
  return { stream, sha256: () => hash.digest('hex') }
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

export interface ProxyProc {
  proc: Proc
  port: number
  metricsPort: number
  /** Its full multiaddrs, one per line, once listening (`--addr-file`). */
  addrFile: string
  metrics(): Promise<string>
  /**
   * The value of one series; throws when it is absent (a misspelt name or label, or a
   * series never set), unless `ifAbsent` says what absence means (a labelled counter has
   * no series before its first increment).
   */
  metric(name: string, labels?: Record<string, string>, ifAbsent?: number): Promise<number>
}

/** A private mesh on loopback: a swarm key, a ping-monitor bootstrap, helpers to add to it. */
export class Mesh {
  local!: LocalMesh

  /** Its directory (removed by stop). */
  get dir(): { path: string } {
    return { path: this.local.dir }
  }

  get pskFile(): string {
    return this.local.pskFile
  }

  get bootstrap(): string {
    return this.local.bootstrap
  }

  async start(): Promise<void> {
    this.local = await LocalMesh.create({
      swarmKey: formatSwarmKey(generatePsk()),
      prefix: 'mtc-proxy-test-',
    })
    await this.local.startBootstrap()
  }

  /** The mesh's daemons in reverse order, then whatever else a test left running. */
  async stop(): Promise<void> {
    await this.local?.stop()
    await stopAll()
  }

  /** hl-service with its own etcd; resolves once etcd is up. */
  async hlService(): Promise<{ addr: string; metricsPort: number; proc: Proc }> {
    const hl = await this.local.startHlService()
    return { addr: hl.addr, metricsPort: hl.metricsPort as number, proc: hl.proc as Proc }
  }

  /**
   * `hl-cli add` of a service with an image ID no allocator here runs (the fake ones do
   * not care), with `flags` such as `--hard-rtt 50`; throws with its stderr on failure.
   */
  async register(hl: string, service: string, flags: string[] = []): Promise<void> {
    const r = await runToEnd('hl-cli', [
      '--psk-file',
      this.pskFile,
      '--hl',
      hl,
      'add',
      '--image-id',
      `sha256:${'ab'.repeat(32)}`,
      ...flags,
      'mtc/hello-world-server:1',
      service,
    ])
    if (r.code !== 0) throw new Error(`hl-cli add ${service} failed (${r.code}): ${r.stderr}`)
  }

  /** A hello-world-server on a free loopback port, tagged X-Instance: `id`. */
  async hello(id: string): Promise<{ proc: Proc; port: number }> {
    const port = await freePort()
    const proc = run(HELLO_BIN, [String(port)], {
      env: { SERVICE_HOST: '127.0.0.1', INSTANCE_ID: id },
    })
    await waitFor(`hello ${id} listening`, () => proc.stdout().includes('listening'))
    return { proc, port }
  }

  /**
   * A proxy process on the mesh, `positionals` starting with its gateway port; resolves
   * once its gateway answers. Only `extra` tells it an hl-service.
   */
  async proxy(positionals: string[], extra: string[] = []): Promise<ProxyProc> {
    const d = await this.local.startProxy(positionals, extra, { hl: false })
    const metricsPort = d.metricsPort as number
    const metrics = async (): Promise<string> =>
      (await http(metricsPort, '/metrics')).body.toString('utf8')
    return {
      proc: d.proc as Proc,
      port: Number(positionals[0]),
      metricsPort,
      addrFile: d.plan.addrFile,
      metrics,
      metric: async (name, labels, ifAbsent) => {
        const value = metricValue(await metrics(), name, labels) ?? ifAbsent
        if (value == null) throw new Error(`no series ${name} ${JSON.stringify(labels ?? {})}`)
        return value
      },
    }
  }

  /** A service-mode proxy in front of `target`, serving `service`. */
  async serviceProxy(
    service: string,
    targetPort: number,
    extra: string[] = [],
  ): Promise<ProxyProc> {
    return await this.proxy([String(await freePort()), service, `127.0.0.1:${targetPort}`], extra)
  }

  /** Waits until `GET /<service>/` through the gateway on `port` answers 200. */
  async routable(port: number, service: string, timeoutMs = 20_000): Promise<void> {
    await waitFor(
      `${service} routable through :${port}`,
      async () => (await http(port, `/${service}/`, { timeoutMs: 6000 })).status === 200,
      { timeoutMs, intervalMs: 250 },
    )
  }
}
