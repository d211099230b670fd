/**
 * The proxy's figures: hello-world-server reached directly, through two nginx hops in
 * series (the itsUP layout) and through the mesh (client proxy → overlay → service
 * proxy → service), all in the same run against the same service process:
 *  - latency p50/p99 of 1 KB responses on 1 connection, throughput on 32 (wrk);
 *  - a 100 MB response, direct and through the mesh (MB/s);
 *  - RSS of the client and the service proxy, idle and at 1,000 req/s.
 * Starts and stops everything it uses (loopback only).
 *
 *   node bench/src/proxy.ts [--seconds 5]
 * BENCH_LOG=LEVEL sets the proxies' log level; BENCH_PROFILE=DIR writes CPU profiles of
 * the client proxy there (node --cpu-prof).
 */
import { get } from 'node:http'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import {
  freePort,
  type Proc,
  REPO_ROOT,
  run,
  startDaemon,
  stopAll,
  tempDir,
  waitFor,
} from '@mtc/testkit'
import { fixedRate } from './fixed-rate.ts'
import { startNginxChain } from './nginx.ts'
import { quantile, report, rssBytes, withCleanup } from './stats.ts'
import { startSwarm } from './swarm.ts'
import { type Load, warmUp, wrk } from './wrk.ts'

const HELLO_BIN = join(REPO_ROOT, 'demos/helloworld/bin/hello-world-server.js')
const SERVICE = 'hello-world-server'
const SMALL = '/bytes/1024'
const BULK_BYTES = 100e6
const BULK_TRIALS = 3
const MEMORY_RPS = 1000
const MEMORY_LOAD_MS = 10_000
const RSS_SAMPLE_MS = 250
/** Unmeasured load on every path before the wrk figures (see warmUp). */
const WARMUP_SECONDS = 20
const WARMUP_CONNECTIONS = 32
/** After start-up and the first request, before reading the idle RSS. */
const IDLE_SETTLE_MS = 3000

/** Issue #7's targets. */
const TARGET = {
  addedP50Ms: 0.5,
  addedP99Ms: 2,
  throughputOfDirect: 0.5,
  bulkMBps: 100,
  rssBytes: 60e6,
}

const fmt = (v: number, digits = 3) => v.toFixed(digits)
const signed = (v: number) => `${v >= 0 ? '+' : ''}${fmt(v)}`
const mb = (bytes: number) => `${fmt(bytes / 1e6, 1)} MB`

/** Milliseconds to GET `url` to its last byte; throws unless 200 and `bytes` long. */
function download(url: string, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    get(url, (res) => {
      let got = 0
      res.on('data', (chunk: Buffer) => {
        got += chunk.length
      })
      res.on('end', () =>
        res.statusCode === 200 && got === bytes
          ? resolve(performance.now() - t0)
          : reject(new Error(`${url}: HTTP ${res.statusCode}, ${got} of ${bytes} bytes`)),
      )
      res.on('error', reject)
    }).on('error', reject)
  })
}

/** The largest RSS of each process while `during` runs, sampled every RSS_SAMPLE_MS. */
async function peakRss<T>(pids: number[], during: Promise<T>): Promise<[T, number[]]> {
  const peak = pids.map(() => 0)
  const sample = async () => {
    const now = await Promise.all(pids.map(rssBytes))
    now.forEach((v, i) => {
      peak[i] = Math.max(peak[i], v)
    })
  }
  const timer = setInterval(() => void sample().catch(() => {}), RSS_SAMPLE_MS)
  try {
    const result = await during
    await sample()
    return [result, peak]
  } finally {
    clearInterval(timer)
  }
}

interface Paths {
  direct: string
  nginx: string
  mesh: string
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' } } })
  const seconds = Number(values.seconds)
  const dir = await tempDir('mtc-bench-proxy-')
  let client: Proc | undefined
  await withCleanup(
    async () => {
      await stopAll()
      await dir.remove()
    },
    async () => {
      const { joined } = await startSwarm(dir.path)
      const helloPort = await freePort()
      const hello = run(HELLO_BIN, [String(helloPort)], { env: { SERVICE_HOST: '127.0.0.1' } })
      await waitFor('hello listening', () => hello.stdout().includes('listening'))
      const common = [...joined, '--log-level', process.env.BENCH_LOG ?? 'error']
      const service = await startDaemon(
        'proxy',
        [...common, String(await freePort()), SERVICE, `127.0.0.1:${helloPort}`],
        dir.path,
      )
      const clientPort = await freePort()
      const profile =
        process.env.BENCH_PROFILE != null
          ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.BENCH_PROFILE}` }
          : undefined
      client = (
        await startDaemon('proxy', [...common, String(clientPort)], dir.path, { env: profile })
      ).proc
      const nginx = await startNginxChain(join(dir.path, 'nginx'), helloPort, 2, SMALL)
      const base: Paths = {
        direct: `http://127.0.0.1:${helloPort}`,
        nginx: `http://127.0.0.1:${nginx.port}`,
        mesh: `http://127.0.0.1:${clientPort}/${SERVICE}`,
      }
      await waitFor(
        'the mesh path',
        async () => (await fetch(`${base.mesh}${SMALL}`)).status === 200,
        { timeoutMs: 30_000, intervalMs: 250 },
      )
      const progress = (s: string) => process.stderr.write(`[proxy] ${s}\n`)
      const pids = [client.child.pid!, service.proc.child.pid!]

      progress('memory, idle and at 1,000 req/s')
      await sleep(IDLE_SETTLE_MS)
      const idle = await Promise.all(pids.map(rssBytes))
      const [rate, loaded] = await peakRss(
        pids,
        fixedRate(`${base.mesh}${SMALL}`, MEMORY_RPS, MEMORY_LOAD_MS),
      )

      progress(`warm-up: ${WARMUP_SECONDS} s of load per path`)
      for (const url of Object.values(base)) {
        await warmUp(`${url}${SMALL}`, WARMUP_CONNECTIONS, WARMUP_SECONDS)
      }
      const each = async (connections: number): Promise<Record<keyof Paths, Load>> => {
        progress(`wrk, ${connections} connection(s), ${seconds} s per path`)
        return {
          direct: await wrk(`${base.direct}${SMALL}`, connections, seconds),
          nginx: await wrk(`${base.nginx}${SMALL}`, connections, seconds),
          mesh: await wrk(`${base.mesh}${SMALL}`, connections, seconds),
        }
      }
      const one = await each(1)
      const many = await each(32)

      progress(
        `${BULK_TRIALS} downloads of ${fmt(BULK_BYTES / 1e6, 0)} MB, direct and through the mesh`,
      )
      const bulk = { direct: [] as number[], mesh: [] as number[] }
      for (let i = 0; i < BULK_TRIALS; i++) {
        bulk.direct.push(await download(`${base.direct}/bytes/${BULK_BYTES}`, BULK_BYTES))
        bulk.mesh.push(await download(`${base.mesh}/bytes/${BULK_BYTES}`, BULK_BYTES))
      }
      const mbps = (times: number[]) => BULK_BYTES / 1e6 / (quantile(times, 0.5) / 1000)

      const errors = [...Object.values(one), ...Object.values(many)].reduce(
        (n, l) => n + l.errors,
        0,
      )
      const latency = (l: Load) => `${fmt(l.p50)} / ${fmt(l.p99)} ms`
      const added = (l: Load) =>
        `${signed(l.p50 - one.direct.p50)} / ${signed(l.p99 - one.direct.p99)} ms`
      const share = (l: Load) => fmt(l.rps / many.direct.rps, 2)
      const rss = (i: number) => ({
        value: `${mb(idle[i])} / ${mb(loaded[i])}`,
        baseline: '–',
        target: `≤ ${fmt(TARGET.rssBytes / 1e6, 0)} MB`,
        met: Math.max(idle[i], loaded[i]) <= TARGET.rssBytes && rate.failed === 0,
      })
      const load = `${rate.rps.toFixed(0)} req/s, ${rate.failed} failed`
      await report(
        'proxy',
        [
          {
            what: 'latency p50/p99, 1 KB, 1 conn, mesh',
            value: latency(one.mesh),
            baseline: `direct ${latency(one.direct)}; nginx×2 ${latency(one.nginx)}`,
            ratio: `added ${added(one.mesh)} (nginx×2 ${added(one.nginx)})`,
            target: `added ≤ ${TARGET.addedP50Ms} / ≤ ${TARGET.addedP99Ms} ms`,
            met:
              one.mesh.errors === 0 &&
              one.mesh.p50 - one.direct.p50 <= TARGET.addedP50Ms &&
              one.mesh.p99 - one.direct.p99 <= TARGET.addedP99Ms,
          },
          {
            what: 'throughput, 1 KB, 32 conns, mesh',
            value: `${many.mesh.rps.toFixed(0)} req/s`,
            baseline: `direct ${many.direct.rps.toFixed(0)}; nginx×2 ${many.nginx.rps.toFixed(0)} req/s`,
            ratio: `${share(many.mesh)} of direct (nginx×2 ${share(many.nginx)})`,
            target: `≥ ${TARGET.throughputOfDirect * 100} % of direct`,
            met:
              many.mesh.errors === 0 &&
              many.mesh.rps >= TARGET.throughputOfDirect * many.direct.rps,
          },
          {
            what: `bulk ${fmt(BULK_BYTES / 1e6, 0)} MB response, mesh (median of ${BULK_TRIALS})`,
            value: `${fmt(mbps(bulk.mesh), 1)} MB/s`,
            baseline: `direct ${fmt(mbps(bulk.direct), 1)} MB/s`,
            ratio: `${fmt(mbps(bulk.mesh) / mbps(bulk.direct), 2)} of direct`,
            target: `≥ ${TARGET.bulkMBps} MB/s`,
            met: mbps(bulk.mesh) >= TARGET.bulkMBps,
          },
          { what: `client proxy RSS, idle / at ${MEMORY_RPS} req/s`, ...rss(0), ratio: load },
          { what: `service proxy RSS, idle / at ${MEMORY_RPS} req/s`, ...rss(1), ratio: load },
        ],
        { seconds, one, many, bulk, bulkBytes: BULK_BYTES, idle, loaded, rate, errors },
      )
    },
  ).catch((err: Error) => {
    if (client != null) process.stderr.write(`client proxy's log:\n${client.stderr()}\n`)
    throw err
  })
}

await main()
process.exit(0)
