/**
 * CPU time per request of two proxy builds, measured interleaved in the same run: for each
 * build a service proxy (in front of the same hello-world-server, and of the same nginx
 * serving a 1 KB file) and a client proxy, all in one mesh; then rounds of wrk at 32
 * connections (and 1) through each build in turn, with utime + stime of its client and
 * service proxy from /proc/<pid>/stat around each run. On a shared machine absolute req/s
 * drift with the load of others; CPU µs per request, compared within a round, does not
 * (much). Prints every round and the medians.
 *
 *   BENCH_PROXY_A=proxy-base node bench/src/proxy-ab.ts [--rounds 3] [--seconds 8] [--bulk-only]
 * A and B default to `proxy` (the workspace's); each is an executable found as testkit's
 * `run` finds one (an mtc bin by name, else PATH). BENCH_PROFILE_B=DIR writes CPU profiles of B's
 * client and service proxies there (node --cpu-prof).
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { parseArgs } from 'node:util'
import { waitFor } from '@mtc/testkit'
import { SMALL, STATIC_FILE, startBenchMesh } from './bench-mesh.ts'
import { downloadMBps } from './download.ts'
import { cpuMs, procStat, quantile, withCleanup } from './stats.ts'
import { warmUp, wrk } from './wrk.ts'

const WARMUP_SECONDS = 15
const BULK_BYTES = 100e6

/** Idle time measured before each run: the proxies' background work (DHT, liveness
 * probes), taken out of the run's CPU time in proportion to its duration. */
const IDLE_MS = 3000

/** CPU ms per second of `pids` with no requests, each. */
async function idleRate(pids: number[]): Promise<number[]> {
  const before = await Promise.all(pids.map(cpuMs))
  const t0 = performance.now()
  await sleep(IDLE_MS)
  const after = await Promise.all(pids.map(cpuMs))
  const s = (performance.now() - t0) / 1000
  return after.map((v, i) => (v - before[i]) / s)
}

interface Build {
  name: string
  bin: string
  urls: { hello: string; static: string }
  pids: { client: number; hello: number; static: number }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      seconds: { type: 'string', default: '8' },
      'bulk-only': { type: 'boolean', default: false },
    },
  })
  const rounds = Number(values.rounds)
  const seconds = Number(values.seconds)
  const bench = await startBenchMesh({ prefix: 'mtc-bench-ab-' })
  const { helloPort, staticPort } = bench
  await withCleanup(
    () => bench.stop(),
    async () => {
      const builds: Build[] = []
      for (const [name, bin] of [
        ['A', process.env.BENCH_PROXY_A ?? 'proxy'],
        ['B', process.env.BENCH_PROXY_B ?? 'proxy'],
      ]) {
        const profile =
          name === 'B' && process.env.BENCH_PROFILE_B != null
            ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${process.env.BENCH_PROFILE_B}` }
            : undefined
        const svc = async (service: string, target: number) =>
          (await bench.serviceProxy(service, target, { bin, env: profile })).proc!.child.pid!
        const helloPid = await svc(`hello-${name.toLowerCase()}`, helloPort)
        const staticPid = await svc(`static-${name.toLowerCase()}`, staticPort)
        const client = await bench.clientProxy({ bin, env: profile })
        const base = `http://127.0.0.1:${client.port}`
        builds.push({
          name,
          bin,
          urls: {
            hello: `${base}/hello-${name.toLowerCase()}${SMALL}`,
            static: `${base}/static-${name.toLowerCase()}${STATIC_FILE}`,
          },
          pids: { client: client.daemon.proc!.child.pid!, hello: helloPid, static: staticPid },
        })
      }
      for (const b of builds)
        for (const url of Object.values(b.urls))
          await waitFor('the mesh path', async () => (await fetch(url)).status === 200, {
            timeoutMs: 30_000,
            intervalMs: 250,
          })
      const log = (s: string) => process.stderr.write(`[ab] ${s}\n`)
      const wrkRounds = values['bulk-only'] ? 0 : rounds
      if (wrkRounds > 0) log(`warm-up ${WARMUP_SECONDS} s per path`)
      for (const b of builds)
        for (const url of wrkRounds > 0 ? Object.values(b.urls) : [])
          await warmUp(url, 32, WARMUP_SECONDS)

      type Key = `${string} ${'hello' | 'static'} c${number}`
      const samples = new Map<Key, { client: number[]; service: number[]; rps: number[] }>()
      for (let r = 0; r < wrkRounds; r++) {
        // Alternate the order so neither build always runs first.
        const order = r % 2 === 0 ? builds : [...builds].reverse()
        for (const [path, conns] of [
          ['hello', 32],
          ['static', 32],
          ['hello', 1],
        ] as const) {
          for (const b of order) {
            const servicePid = path === 'hello' ? b.pids.hello : b.pids.static
            const pids = [b.pids.client, servicePid]
            const idle = await idleRate(pids)
            const l = await wrk(b.urls[path], conns, seconds, pids)
            // µs per request, less what the process would have used idle meanwhile.
            const [c, s] = (l.cpuMs ?? []).map(
              (v, i) => ((v - idle[i] * seconds) * 1000) / l.requests,
            )
            const key: Key = `${b.name} ${path} c${conns}`
            const e = samples.get(key) ?? { client: [], service: [], rps: [] }
            e.client.push(c)
            e.service.push(s)
            e.rps.push(l.rps)
            samples.set(key, e)
            log(
              `round ${r + 1} ${key}: ${l.rps.toFixed(0)} req/s, client ${c.toFixed(0)} µs, service ${s.toFixed(0)} µs (idle ${idle.map((v) => v.toFixed(1)).join('/')} ms/s), p50 ${l.p50.toFixed(3)} ms, errors ${l.errors}`,
            )
          }
        }
      }
      const bulk = new Map<string, number[]>()
      const bulkCpu = new Map<string, number[][]>()
      for (let r = 0; r < rounds; r++) {
        const direct = `http://127.0.0.1:${helloPort}/bytes/${BULK_BYTES}`
        for (const [name, url, pids] of [
          ['direct', direct, []] as const,
          ...builds.map(
            (b) =>
              [
                b.name,
                b.urls.hello.replace(SMALL, `/bytes/${BULK_BYTES}`),
                [b.pids.client, b.pids.hello],
              ] as const,
          ),
        ]) {
          const before = await Promise.all(pids.map(procStat))
          const v = await downloadMBps(url, BULK_BYTES)
          // CPU ms and page faults per MB of each proxy (client, service).
          const after = await Promise.all(pids.map(procStat))
          const MB = BULK_BYTES / 1e6
          const perMB = after.map((a, i) => (a.cpuMs - before[i].cpuMs) / MB)
          const faultsPerMB = after.map((a, i) => (a.minorFaults - before[i].minorFaults) / MB)
          bulk.set(name, [...(bulk.get(name) ?? []), v])
          bulkCpu.set(name, [...(bulkCpu.get(name) ?? []), perMB])
          log(
            `round ${r + 1} bulk ${name}: ${v.toFixed(1)} MB/s${perMB.length > 0 ? `, CPU ${perMB.map((x) => x.toFixed(2)).join(' / ')} ms per MB, ${faultsPerMB.map((x) => x.toFixed(1)).join(' / ')} page faults per MB` : ''}`,
          )
        }
      }
      const out: string[] = []
      for (const [name, cpu] of bulkCpu)
        if (cpu[0].length > 0)
          out.push(
            `bulk 100 MB ${name.padEnd(6)} CPU ms per MB, client / service: median ${[0, 1]
              .map((i) =>
                quantile(
                  cpu.map((c) => c[i]),
                  0.5,
                ).toFixed(2),
              )
              .join(' / ')}`,
          )
      for (const [name, v] of bulk)
        out.push(
          `bulk 100 MB ${name.padEnd(6)} median ${quantile(v, 0.5).toFixed(1)} MB/s (${v.map((x) => x.toFixed(1)).join(' ')})`,
        )
      for (const [key, e] of samples) {
        const m = (v: number[]) => quantile(v, 0.5).toFixed(0)
        out.push(
          `${key.padEnd(16)} median client ${m(e.client)} µs/req, service ${m(e.service)} µs/req, ${m(e.rps)} req/s  (client ${e.client.map((v) => v.toFixed(0)).join(' ')}; service ${e.service.map((v) => v.toFixed(0)).join(' ')})`,
        )
      }
      process.stdout.write(
        `A = ${builds[0].bin}, B = ${builds[1].bin}, ${rounds} rounds × ${seconds} s\n${out.join('\n')}\n`,
      )
    },
  )
}

await main()
process.exit(0)
