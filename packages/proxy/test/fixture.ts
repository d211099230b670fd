import { createHash, randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { type Agent, type IncomingHttpHeaders, request } from 'node:http'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { formatSwarmKey, generatePsk } from '@mtc/p2pnode'
import {
  freePort,
  metricValue,
  type Proc,
  REPO_ROOT,
  readLinesWhenReady,
  run,
  stopAll,
  tempDir,
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
  } = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method: options.method ?? 'GET',
        headers: options.headers,
        agent: options.agent ?? false,
        signal: AbortSignal.timeout(options.timeoutMs ?? 15_000),
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
  dir!: { path: string; remove: () => Promise<void> }
  pskFile = ''
  bootstrap = ''
  private seq = 0

  async start(): Promise<void> {
    this.dir = await tempDir('mtc-proxy-test-')
    this.pskFile = join(this.dir.path, 'swarm.key')
    await writeFile(this.pskFile, formatSwarmKey(generatePsk()), { mode: 0o600 })
    const addrFile = join(this.dir.path, 'pm.addr')
    const pm = run('ping-monitor', [
      '--psk-file',
      this.pskFile,
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--metrics',
      `127.0.0.1:${await freePort()}`,
      '--addr-file',
      addrFile,
    ])
    const lines = await readLinesWhenReady(addrFile).catch((err: Error) => {
      throw new Error(`${err.message}\n${pm.stderr()}`)
    })
    this.bootstrap = lines[0]
  }

  async stop(): Promise<void> {
    await stopAll()
    await this.dir?.remove()
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

  /** A proxy process on the mesh; resolves once its gateway answers. */
  async proxy(positionals: string[], extra: string[] = []): Promise<ProxyProc> {
    const metricsPort = await freePort()
    const port = positionals[0] != null ? Number(positionals[0]) : await freePort()
    const addrFile = join(this.dir.path, `proxy-${this.seq++}.addr`)
    const proc = run('proxy', [
      '--psk-file',
      this.pskFile,
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--bootstrap',
      this.bootstrap,
      '--metrics',
      `127.0.0.1:${metricsPort}`,
      '--addr-file',
      addrFile,
      ...extra,
      ...positionals,
    ])
    await waitFor(
      'proxy gateway up',
      async () => {
        if (proc.child.exitCode != null) throw new Error(`proxy exited: ${proc.stderr()}`)
        return (await http(port, '/', { timeoutMs: 1000 })).status === 400
      },
      { timeoutMs: 15_000 },
    ).catch((err: Error) => {
      throw new Error(`${err.message}\n${proc.stderr()}`)
    })
    const metrics = async (): Promise<string> =>
      (await http(metricsPort, '/metrics')).body.toString('utf8')
    return {
      proc,
      port,
      metricsPort,
      addrFile,
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
