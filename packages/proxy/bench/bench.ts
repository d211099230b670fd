/**
 * Latency and throughput of direct HTTP to hello-world-server versus the mesh path
 * (client proxy → overlay → service proxy → service), at 1 and 32 concurrent
 * keep-alive connections. Starts and stops everything it uses (loopback only).
 *
 *   node packages/proxy/bench/bench.ts [--seconds 5]
 */
import { writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { formatSwarmKey, generatePsk } from '@mtc/p2pnode'
import {
  freePort,
  REPO_ROOT,
  readLinesWhenReady,
  run,
  stopAll,
  tempDir,
  waitFor,
} from '@mtc/testkit'

const HELLO_BIN = join(REPO_ROOT, 'demos/helloworld/bin/hello-world-server.js')
const WARMUP_MS = 1000

interface Result {
  label: string
  concurrency: number
  requests: number
  rps: number
  p50: number
  p99: number
}

function get(agent: Agent, port: number, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path, agent }, (res) => {
      res.resume()
      res.on('end', () =>
        res.statusCode === 200
          ? resolve()
          : reject(new Error(`${res.statusCode} ${res.headers['x-mtc-error']}`)),
      )
    })
      .on('error', reject)
      .end()
  })
}

/** `concurrency` loops, each on its own keep-alive connection, for `ms`. */
async function load(
  label: string,
  port: number,
  path: string,
  concurrency: number,
  ms: number,
): Promise<Result> {
  const agents = Array.from(
    { length: concurrency },
    () => new Agent({ keepAlive: true, maxSockets: 1 }),
  )
  const worker = async (agent: Agent, until: number, samples?: number[]): Promise<void> => {
    while (performance.now() < until) {
      const t = performance.now()
      await get(agent, port, path)
      samples?.push(performance.now() - t)
    }
  }
  const warm = performance.now() + WARMUP_MS
  await Promise.all(agents.map((a) => worker(a, warm)))
  const samples: number[] = []
  const started = performance.now()
  await Promise.all(agents.map((a) => worker(a, started + ms, samples)))
  const elapsed = (performance.now() - started) / 1000
  for (const a of agents) a.destroy()
  samples.sort((a, b) => a - b)
  const q = (p: number): number =>
    samples[Math.min(samples.length - 1, Math.floor(p * samples.length))]
  return {
    label,
    concurrency,
    requests: samples.length,
    rps: samples.length / elapsed,
    p50: q(0.5),
    p99: q(0.99),
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' } } })
  const ms = Number(values.seconds) * 1000
  const dir = await tempDir('mtc-bench-')
  try {
    const pskFile = join(dir.path, 'swarm.key')
    await writeFile(pskFile, formatSwarmKey(generatePsk()), { mode: 0o600 })
    const pmAddr = join(dir.path, 'pm.addr')
    run('ping-monitor', [
      '--psk-file',
      pskFile,
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--metrics',
      `127.0.0.1:${await freePort()}`,
      '--addr-file',
      pmAddr,
    ])
    const bootstrap = (await readLinesWhenReady(pmAddr))[0]
    const helloPort = await freePort()
    const hello = run(HELLO_BIN, [String(helloPort)], { env: { SERVICE_HOST: '127.0.0.1' } })
    await waitFor('hello listening', () => hello.stdout().includes('listening'))
    const common = [
      '--psk-file',
      pskFile,
      '--listen',
      '/ip4/127.0.0.1/tcp/0',
      '--bootstrap',
      bootstrap,
      '--log-level',
      process.env.BENCH_LOG ?? 'error',
    ]
    const servicePort = await freePort()
    run('proxy', [
      ...common,
      '--metrics',
      `127.0.0.1:${await freePort()}`,
      String(servicePort),
      'hello-world-server',
      `127.0.0.1:${helloPort}`,
    ])
    const clientPort = await freePort()
    // BENCH_PROFILE=DIR writes CPU profiles of both proxies there (node --cpu-prof).
    const profile =
      process.env.BENCH_PROFILE != null
        ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.BENCH_PROFILE}` }
        : undefined
    const client = run(
      'proxy',
      [...common, '--metrics', `127.0.0.1:${await freePort()}`, String(clientPort)],
      { env: profile },
    )
    const agent = new Agent({ keepAlive: true })
    await waitFor(
      'the mesh path',
      async () => {
        await get(agent, clientPort, '/hello-world-server/')
        return true
      },
      { timeoutMs: 30_000, intervalMs: 250 },
    )
    agent.destroy()

    const results: Result[] = []
    try {
      for (const c of [1, 32]) {
        results.push(await load('direct', helloPort, '/', c, ms))
        results.push(await load('mesh', clientPort, '/hello-world-server/', c, ms))
      }
    } catch (err) {
      process.stderr.write(`client proxy's log:\n${client.stderr()}\n`)
      throw err
    }
    const lines = [
      `| path | conns | requests | req/s | p50 ms | p99 ms |`,
      `|---|---|---|---|---|---|`,
      ...results.map(
        (r) =>
          `| ${r.label} | ${r.concurrency} | ${r.requests} | ${r.rps.toFixed(0)} | ${r.p50.toFixed(3)} | ${r.p99.toFixed(3)} |`,
      ),
      '',
      ...[1, 32].map((c) => {
        const d = results.find((r) => r.label === 'direct' && r.concurrency === c)!
        const m = results.find((r) => r.label === 'mesh' && r.concurrency === c)!
        return `conns ${c}: mesh/direct p50 ×${(m.p50 / d.p50).toFixed(1)}, p99 ×${(m.p99 / d.p99).toFixed(1)}, req/s ×${(m.rps / d.rps).toFixed(2)}`
      }),
    ]
    process.stdout.write(`${lines.join('\n')}\n`)
  } finally {
    await stopAll()
    await dir.remove()
  }
}

await main()
