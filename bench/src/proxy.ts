/**
 * The proxy's figures: hello-world-server reached directly, through two nginx hops in
 * series (the itsUP layout) and through the mesh (client proxy → overlay → service
 * proxy → service), all in the same run against the same service process:
 *  - latency p50/p99 of 1 KB responses on 1 connection, one request at a time on a plain
 *    socket (sequential.ts says why not wrk; wrk's figures at 1 connection alongside),
 *    also through the floor gateway that splices bytes unread (the transport's own share);
 *  - throughput on 32 and 128 connections (wrk);
 *  - the same at 32 through floor-gateway.ts, over the same overlay to a service proxy of
 *    their own, without the gateway's own work: relaying bytes unread (what any gateway on
 *    this stack could reach) and behind Node's HTTP server (what one built on it could reach);
 *  - the same throughput with nginx serving a 1 KB file as the service (a service that
 *    costs next to nothing, so the figure is the proxies' own);
 *  - CPU time per request of each proxy during the 32-connection mesh run (/proc/<pid>/stat);
 *  - a 100 MB response, direct and through the mesh (MB/s, curl; after one unmeasured);
 *  - RSS and private memory (Private_Dirty) of the client and the service proxy after
 *    start-up and at 1,000 req/s; private memory again, each second from 5 to 35 s
 *    without requests (median and range).
 * Starts and stops everything it uses (loopback only).
 *
 *   node bench/src/proxy.ts [--seconds 5]
 * BENCH_LOG=LEVEL sets the proxies' log level; BENCH_PROFILE=DIR writes CPU profiles of
 * the client proxy there (node --cpu-prof); BENCH_PROXY=NAME runs that proxy executable
 * (found in PATH) instead of the workspace's: a baseline build, to compare back to back.
 */
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { type Proc, waitFor } from '@mtc/testkit'
import { SMALL, STATIC_FILE, startBenchMesh } from './bench-mesh.ts'
import { downloadMBps } from './download.ts'
import { fixedRate } from './fixed-rate.ts'
import { startNginxChain } from './nginx.ts'
import { type Sequential, sequentialLatency } from './sequential.ts'
import { privateDirtyBytes, quantile, report, rssBytes, withCleanup } from './stats.ts'
import { type Load, warmUp, wrk } from './wrk.ts'

const SERVICE = 'hello-world-server'
const PROXY = process.env.BENCH_PROXY ?? 'proxy'
/** nginx serving a static 1 KB file, as a second service. */
const STATIC_SERVICE = 'nginx-static'
const BULK_BYTES = 100e6
const BULK_TRIALS = 3
const MEMORY_RPS = 1000
const MEMORY_LOAD_MS = 10_000
const RSS_SAMPLE_MS = 250
/** Unmeasured load on every path before the wrk figures (see warmUp). */
const WARMUP_SECONDS = 20
const WARMUP_CONNECTIONS = 32
/** Connections of the wide run: more than a burst the gateway once kept streams for. */
const WIDE_CONNECTIONS = 128
/** After start-up and the first request, before reading the idle RSS. */
const IDLE_SETTLE_MS = 3000
/** Without requests after the runs, private memory is read every IDLE_SAMPLE_MS from
 * IDLE_FIRST_MS to IDLE_LAST_MS: an idle proxy as a host has it most of the time. It is a
 * sawtooth there (the proxy's idle release, then the heap growing back under its own
 * background work: proxy README, "Memory"), so a single reading lands anywhere on it; the
 * median is the figure, the first readings can still hold the last download's buffers. */
const IDLE_FIRST_MS = 5_000
const IDLE_LAST_MS = 35_000
const IDLE_SAMPLE_MS = 1_000

/** Issue #13's targets (#7's RSS bound stays). */
const TARGET = {
  addedP50Ms: 0.35,
  addedP99Ms: 1.5,
  throughputOfDirect: 0.3,
  staticThroughputOfDirect: 0.2,
  bulkMBps: 200,
  rssBytes: 60e6,
  idlePrivateBytes: 40e6,
}

const fmt = (v: number, digits = 3) => v.toFixed(digits)
const signed = (v: number) => `${v >= 0 ? '+' : ''}${fmt(v)}`
const mb = (bytes: number) => `${fmt(bytes / 1e6, 1)} MB`

/** RSS and private memory of a process, in bytes. */
interface Memory {
  rss: number
  private: number
}

async function memory(pid: number): Promise<Memory> {
  const [rss, priv] = await Promise.all([rssBytes(pid), privateDirtyBytes(pid)])
  return { rss, private: priv }
}

/** The largest RSS and private memory of each process while `during` runs, sampled every
 * RSS_SAMPLE_MS. */
async function peakRss<T>(pids: number[], during: Promise<T>): Promise<[T, Memory[]]> {
  const peak = pids.map(() => ({ rss: 0, private: 0 }))
  const sample = async () => {
    const now = await Promise.all(pids.map(memory))
    now.forEach((v, i) => {
      peak[i].rss = Math.max(peak[i].rss, v.rss)
      peak[i].private = Math.max(peak[i].private, v.private)
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

/** Whether the mesh's added latency (over direct) meets the target, without errors. */
function latencyMet(runs: Record<keyof Paths, Sequential>): boolean {
  const { direct, mesh } = runs
  return (
    mesh.errors === 0 &&
    mesh.p50 - direct.p50 <= TARGET.addedP50Ms &&
    mesh.p99 - direct.p99 <= TARGET.addedP99Ms
  )
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' } } })
  const seconds = Number(values.seconds)
  const bench = await startBenchMesh({ proxyBin: PROXY, prefix: 'mtc-bench-proxy-' })
  const { helloPort, staticPort } = bench
  let client: Proc | undefined
  await withCleanup(
    () => bench.stop(),
    async () => {
      const service = await bench.serviceProxy(SERVICE, helloPort)
      const profile =
        process.env.BENCH_PROFILE != null
          ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.BENCH_PROFILE}` }
          : undefined
      const clientProxy = await bench.clientProxy({ env: profile })
      const clientPort = clientProxy.port
      client = clientProxy.daemon.proc!
      // The floors have a service proxy of their own: the mesh's keeps its figures (memory).
      const floorService = await bench.serviceProxy(SERVICE, helloPort)
      const floors = {
        splice: await bench.floorGateway('splice', floorService),
        http: await bench.floorGateway('http', floorService),
      }
      const floorUrl = (f: { port: number }) => `http://127.0.0.1:${f.port}${SMALL}`
      const nginx = await startNginxChain(join(bench.dir, 'nginx'), helloPort, 2, SMALL)
      const staticService = await bench.serviceProxy(STATIC_SERVICE, staticPort)
      const staticNginx = await startNginxChain(
        join(bench.dir, 'nginx-to-static'),
        staticPort,
        2,
        STATIC_FILE,
      )
      const base: Paths = {
        direct: `http://127.0.0.1:${helloPort}${SMALL}`,
        nginx: `http://127.0.0.1:${nginx.port}${SMALL}`,
        mesh: `http://127.0.0.1:${clientPort}/${SERVICE}${SMALL}`,
      }
      const staticBase: Paths = {
        direct: `http://127.0.0.1:${staticPort}${STATIC_FILE}`,
        nginx: `http://127.0.0.1:${staticNginx.port}${STATIC_FILE}`,
        mesh: `http://127.0.0.1:${clientPort}/${STATIC_SERVICE}${STATIC_FILE}`,
      }
      for (const url of [base.mesh, staticBase.mesh])
        await waitFor('the mesh path', async () => (await fetch(url)).status === 200, {
          timeoutMs: 30_000,
          intervalMs: 250,
        })
      const progress = (s: string) => process.stderr.write(`[proxy] ${s}\n`)
      const pids = [client.child.pid!, service.proc!.child.pid!]

      progress('memory, idle and at 1,000 req/s')
      await sleep(IDLE_SETTLE_MS)
      const idle = await Promise.all(pids.map(memory))
      const [rate, loaded] = await peakRss(pids, fixedRate(base.mesh, MEMORY_RPS, MEMORY_LOAD_MS))

      progress(`warm-up: ${WARMUP_SECONDS} s of load per path`)
      for (const url of [
        ...Object.values(base),
        staticBase.mesh,
        ...Object.values(floors).map(floorUrl),
      ]) {
        await warmUp(url, WARMUP_CONNECTIONS, WARMUP_SECONDS)
      }
      const each = async (
        paths: Paths,
        connections: number,
        meshPids: number[] = [],
      ): Promise<Record<keyof Paths, Load>> => {
        progress(`wrk, ${connections} connection(s), ${seconds} s per path`)
        return {
          direct: await wrk(paths.direct, connections, seconds),
          nginx: await wrk(paths.nginx, connections, seconds),
          mesh: await wrk(paths.mesh, connections, seconds, meshPids),
        }
      }
      progress(`one request at a time on 1 connection, ${seconds} s per path`)
      const sequential = {
        direct: await sequentialLatency(base.direct, seconds),
        nginx: await sequentialLatency(base.nginx, seconds),
        mesh: await sequentialLatency(base.mesh, seconds),
      }
      // The transport's own share of the added latency: bytes spliced over the same overlay.
      const sequentialFloor = await sequentialLatency(floorUrl(floors.splice), seconds)
      const one = await each(base, 1)
      const many = await each(base, 32, pids)
      progress(`wrk, 32 connections, ${seconds} s per floor gateway`)
      const floor = async (f: { port: number; proc: Proc }) =>
        await wrk(floorUrl(f), 32, seconds, [f.proc.child.pid!, floorService.proc!.child.pid!])
      const floorLoads = { splice: await floor(floors.splice), http: await floor(floors.http) }
      const staticMany = await each(staticBase, 32, [pids[0], staticService.proc!.child.pid!])
      // Above 64 concurrent requests the gateway once closed and reopened streams per burst.
      progress(`wrk, ${WIDE_CONNECTIONS} connections, ${seconds} s, direct and mesh`)
      const wide = {
        direct: await wrk(base.direct, WIDE_CONNECTIONS, seconds),
        mesh: await wrk(base.mesh, WIDE_CONNECTIONS, seconds),
      }

      progress(
        `${BULK_TRIALS} downloads of ${fmt(BULK_BYTES / 1e6, 0)} MB, direct and through the mesh`,
      )
      const bulk = { direct: [] as number[], mesh: [] as number[] }
      const bulkUrl = (url: string) => url.replace(SMALL, `/bytes/${BULK_BYTES}`)
      // Unmeasured, as the wrk paths are warmed up: the first large body through a proxy
      // runs code the 1 KB runs did not (measured 106–143 MB/s, then 175–262).
      await downloadMBps(bulkUrl(base.mesh), BULK_BYTES)
      for (let i = 0; i < BULK_TRIALS; i++) {
        bulk.direct.push(await downloadMBps(bulkUrl(base.direct), BULK_BYTES))
        bulk.mesh.push(await downloadMBps(bulkUrl(base.mesh), BULK_BYTES))
      }
      const mbps = (speeds: number[]) => quantile(speeds, 0.5)
      progress(`memory while idle, ${IDLE_FIRST_MS / 1000}–${IDLE_LAST_MS / 1000} s after the runs`)
      await sleep(IDLE_FIRST_MS)
      const idleSamples: number[][] = pids.map(() => [])
      for (let t = IDLE_FIRST_MS; t <= IDLE_LAST_MS; t += IDLE_SAMPLE_MS) {
        const now = await Promise.all(pids.map(privateDirtyBytes))
        for (const [i, v] of now.entries()) idleSamples[i].push(v)
        if (t < IDLE_LAST_MS) await sleep(IDLE_SAMPLE_MS)
      }
      const idleAfter = idleSamples.map((v) => ({
        median: quantile(v, 0.5),
        min: Math.min(...v),
        max: Math.max(...v),
      }))

      const errors = [
        ...Object.values(sequential),
        sequentialFloor,
        ...Object.values(one),
        ...Object.values(many),
        ...Object.values(staticMany),
        ...Object.values(wide),
        ...Object.values(floorLoads),
      ].reduce((n, l) => n + l.errors, 0)
      type Latency = Pick<Load, 'p50' | 'p99'>
      const latency = (l: Latency) => `${fmt(l.p50)} / ${fmt(l.p99)} ms`
      const added = (l: Latency, direct: Latency) =>
        `${signed(l.p50 - direct.p50)} / ${signed(l.p99 - direct.p99)} ms`
      const share = (l: Load, of: { direct: Load } = many) => fmt(l.rps / of.direct.rps, 2)
      const rss = (i: number) => ({
        value: `${mb(idle[i].rss)} / ${mb(loaded[i].rss)}`,
        baseline: '–',
        target: `≤ ${fmt(TARGET.rssBytes / 1e6, 0)} MB`,
        met: Math.max(idle[i].rss, loaded[i].rss) <= TARGET.rssBytes && rate.failed === 0,
      })
      const privateMemory = (i: number) => ({
        value: `${mb(idle[i].private)} / ${mb(loaded[i].private)} / ${mb(idleAfter[i].median)} (${fmt(idleAfter[i].min / 1e6, 1)}–${mb(idleAfter[i].max)})`,
        baseline: '–',
        target: `idle ≤ ${fmt(TARGET.idlePrivateBytes / 1e6, 0)} MB (median)`,
        met: idleAfter[i].median <= TARGET.idlePrivateBytes,
      })
      /** CPU µs per request of each proxy of a mesh run (client, service). */
      const cpuPerRequest = (l: Load) =>
        (l.cpuMs ?? []).map((v) => `${fmt((v * 1000) / l.requests, 0)} µs`).join(' / ')
      const load = `${rate.rps.toFixed(0)} req/s, ${rate.failed} failed`
      await report(
        'proxy',
        [
          {
            what: 'latency p50/p99, 1 KB, 1 conn, one request at a time, mesh',
            value: latency(sequential.mesh),
            baseline: `direct ${latency(sequential.direct)}; nginx×2 ${latency(sequential.nginx)}; floor, bytes spliced ${latency(sequentialFloor)}`,
            ratio: `added ${added(sequential.mesh, sequential.direct)} (nginx×2 ${added(sequential.nginx, sequential.direct)}; floor, bytes spliced ${added(sequentialFloor, sequential.direct)})`,
            target: `added ≤ ${TARGET.addedP50Ms} / ≤ ${TARGET.addedP99Ms} ms`,
            met: latencyMet(sequential),
          },
          {
            what: 'latency p50/p99, 1 KB, 1 conn, wrk, mesh',
            value: latency(one.mesh),
            baseline: `direct ${latency(one.direct)}; nginx×2 ${latency(one.nginx)}`,
            ratio: `added ${added(one.mesh, one.direct)} (nginx×2 ${added(one.nginx, one.direct)})`,
            target: "report (wrk's own tail, see sequential.ts)",
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
            what: 'throughput, 1 KB, 32 conns, hello, floor gateways (floor-gateway.ts): bytes spliced unread / behind Node’s HTTP server',
            value: `${floorLoads.splice.rps.toFixed(0)} / ${floorLoads.http.rps.toFixed(0)} req/s`,
            baseline: `direct ${many.direct.rps.toFixed(0)}; mesh ${many.mesh.rps.toFixed(0)} req/s`,
            ratio: `${share(floorLoads.splice)} / ${share(floorLoads.http)} of direct; CPU per request, floor gateway / service proxy: ${cpuPerRequest(floorLoads.splice)} (splice), ${cpuPerRequest(floorLoads.http)} (http)`,
            target: 'report',
          },
          {
            what: `throughput, 1 KB, ${WIDE_CONNECTIONS} conns, mesh`,
            value: `${wide.mesh.rps.toFixed(0)} req/s`,
            baseline: `direct ${wide.direct.rps.toFixed(0)} req/s`,
            ratio: `${share(wide.mesh, wide)} of direct; ${fmt(wide.mesh.rps / many.mesh.rps, 2)} of the mesh at 32`,
            target: 'report',
          },
          {
            what: `bulk ${fmt(BULK_BYTES / 1e6, 0)} MB response, mesh (median of ${BULK_TRIALS})`,
            value: `${fmt(mbps(bulk.mesh), 1)} MB/s`,
            baseline: `direct ${fmt(mbps(bulk.direct), 1)} MB/s`,
            ratio: `${fmt(mbps(bulk.mesh) / mbps(bulk.direct), 2)} of direct`,
            target: `≥ ${TARGET.bulkMBps} MB/s`,
            met: mbps(bulk.mesh) >= TARGET.bulkMBps,
          },
          {
            what: 'throughput, 1 KB, 32 conns, nginx serving a 1 KB file, mesh',
            value: `${staticMany.mesh.rps.toFixed(0)} req/s`,
            baseline: `direct ${staticMany.direct.rps.toFixed(0)}; nginx×2 ${staticMany.nginx.rps.toFixed(0)} req/s`,
            ratio: `${share(staticMany.mesh, staticMany)} of direct (nginx×2 ${share(staticMany.nginx, staticMany)})`,
            target: `≥ ${TARGET.staticThroughputOfDirect * 100} % of direct`,
            met:
              staticMany.mesh.errors === 0 &&
              staticMany.mesh.rps >= TARGET.staticThroughputOfDirect * staticMany.direct.rps,
          },
          {
            what: 'CPU per request, client / service proxy, 32 conns, hello',
            value: cpuPerRequest(many.mesh),
            ratio: `nginx service: ${cpuPerRequest(staticMany.mesh)}`,
            target: 'report (halve)',
          },
          { what: `client proxy RSS, idle / at ${MEMORY_RPS} req/s`, ...rss(0), ratio: load },
          { what: `service proxy RSS, idle / at ${MEMORY_RPS} req/s`, ...rss(1), ratio: load },
          {
            what: `client proxy private memory, after start-up / at ${MEMORY_RPS} req/s / idle ${IDLE_FIRST_MS / 1000}–${IDLE_LAST_MS / 1000} s after the runs, median (min–max)`,
            ...privateMemory(0),
            ratio: load,
          },
          {
            what: `service proxy private memory, after start-up / at ${MEMORY_RPS} req/s / idle ${IDLE_FIRST_MS / 1000}–${IDLE_LAST_MS / 1000} s after the runs, median (min–max)`,
            ...privateMemory(1),
            ratio: load,
          },
        ],
        {
          seconds,
          sequential,
          one,
          many,
          staticMany,
          wide,
          bulkMBps: bulk,
          bulkBytes: BULK_BYTES,
          idle,
          loaded,
          idleAfter,
          idleSamples,
          rate,
          errors,
        },
      )
    },
  ).catch((err: Error) => {
    if (client != null) process.stderr.write(`client proxy's log:\n${client.stderr()}\n`)
    throw err
  })
}

await main()
process.exit(0)
