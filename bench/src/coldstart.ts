/**
 * Cold starts through the whole mesh (client proxy → allocator → Docker → instance
 * proxy → service): first request to first byte for a service with no instance, next to
 * `docker run` of the same image to its first response, measured in the same run; the
 * same with the image fetched over the overlay first (next to `docker load` + run); and a
 * burst of 50 concurrent first requests. Needs dockerd (scripts/dockerd.sh).
 * Run: node bench/src/coldstart.ts [--trials 20] [--fetch-trials 5]
 */
import { mkdir, rm } from 'node:fs/promises'
import { request } from 'node:http'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { LABEL_MANAGED_BY } from '@mtc/allocator/client'
import { formatSwarmKey, generatePsk, loadOrCreateKey } from '@mtc/p2pnode'
import {
  docker,
  freePort,
  LocalMesh,
  REPO_ROOT,
  removeContainers,
  runToEnd,
  stopAll,
  waitFor,
} from '@mtc/testkit'
import { ms, report, summary, withCleanup } from './stats.ts'

const IMAGE = 'mtc/hello-world-server:1.0'
const BURST = 50
/** Issue #7's targets for a cold start with the image on the host. */
const TARGET = { p50Ms: 800, p99Ms: 1500 }

/** Milliseconds from sending a GET to its first response byte; throws on non-200. */
function timeToFirstByte(url: string, timeoutMs = 60_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const req = request(url, { timeout: timeoutMs }, (res) => {
      res.once('data', (first: Buffer) => {
        const dt = performance.now() - t0
        res.resume()
        const why = `${url}: HTTP ${res.statusCode} ${res.headers['x-mtc-error'] ?? ''} ${first.toString().trim()}`
        res.on('end', () => (res.statusCode === 200 ? resolve(dt) : reject(new Error(why))))
      })
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { trials: { type: 'string' }, 'fetch-trials': { type: 'string' } },
  })
  const trials = Number(values.trials ?? 20)
  const fetchTrials = Number(values['fetch-trials'] ?? 5)
  const local = await LocalMesh.create({
    swarmKey: formatSwarmKey(generatePsk()),
    prefix: 'mtc-bench-cold-',
  })
  const dir = { path: local.dir }
  const label = `mtc.bench=${process.pid}`
  let allocPeer: string | undefined
  const cleanup = async () => {
    await removeContainers(label).catch(() => 0)
    await local.stop()
    await stopAll()
    // The instances this run's allocator left (an allocator leaves them running on stop).
    if (allocPeer != null) await removeContainers(`${LABEL_MANAGED_BY}=${allocPeer}`).catch(() => 0)
  }
  await withCleanup(cleanup, async () => {
    const build = await runToEnd(
      'bash',
      [join(REPO_ROOT, 'scripts/build-images.sh'), '--save', dir.path],
      { timeoutMs: 300_000 },
    )
    if (build.code !== 0) throw new Error(`building images failed: ${build.stderr}`)
    const tar = join(dir.path, 'hello-world-server.tar')
    const imageId = (await docker(['image', 'inspect', '-f', '{{.Id}}', IMAGE])).stdout.trim()
    const { pskFile } = local
    const pm = await local.startBootstrap()
    await local.startHlService()
    const allocData = join(dir.path, 'alloc')
    // Allocator and client proxy find the hl-service in the DHT, as in production.
    const alloc = await local.startAllocator(
      ['--max-instances', '200', '--port-range', '41000-41999'],
      { dataDir: allocData, hl: false },
    )
    allocPeer = alloc.peerId
    const port = await freePort()
    const proxy = await local.startProxy([String(port)], [], { hl: false })
    const cli = (args: string[]) => local.hlCli(args)
    const must = async (p: Promise<{ code: number; stderr: string }>) => {
      const r = await p
      if (r.code !== 0) throw new Error(r.stderr)
    }
    await must(cli(['add', '--file', tar, IMAGE, 'hello-world-server']))
    const cleanInstances = () => removeContainers(`${LABEL_MANAGED_BY}=${alloc.peerId}`)

    const progress = (s: string) => process.stderr.write(`[coldstart] ${s}\n`)
    let proxyLogShown = false
    /** Pushes the time to first byte of `url` to `into`; false (and why) if it failed. */
    const firstByteInto = async (into: number[], url: string, timeoutMs?: number) => {
      try {
        into.push(await timeToFirstByte(url, timeoutMs))
        return true
      } catch (err) {
        progress(`${url}: ${(err as Error).message}`)
        if (!proxyLogShown) progress(`client proxy's log (tail):\n${proxy.log().slice(-4000)}`)
        proxyLogShown = true
        return false
      }
    }
    progress('warm-up')
    // Warm-up: the first allocation pays for DHT look-ups of the allocator and registry.
    await must(cli(['add', '--image-id', imageId, IMAGE, 'warmup']))
    await timeToFirstByte(`http://127.0.0.1:${port}/warmup/`)

    progress(`${trials} cold starts with the image on the host`)
    // 1. Image on the host: a fresh service name per trial, so every first request is cold.
    const mesh: number[] = []
    let meshFailed = 0
    for (let i = 0; i < trials; i++) {
      await must(cli(['add', '--image-id', imageId, IMAGE, `cold-${i}`]))
      // A failed first request is one of the figures (target: none), not the end of the run.
      if (!(await firstByteInto(mesh, `http://127.0.0.1:${port}/cold-${i}/`))) meshFailed++
      // Each trial starts from an idle host, as the docker run baseline does.
      await cleanInstances()
    }
    await cleanInstances()

    progress(`${trials} docker runs`)
    // Baseline: docker run of the same image (its proxy and service) to the first response.
    const keyFile = join(dir.path, 'identity.key')
    await loadOrCreateKey(keyFile)
    /** `docker run` of the image (its proxy and service) until the service answers; removed after. */
    const dockerRunToFirstResponse = async (before?: () => Promise<unknown>): Promise<number> => {
      const servicePort = await freePort()
      const env = {
        PROXY_PORT: String(await freePort()),
        PROXY_IP: '127.0.0.1',
        SERVICE_PORT: String(servicePort),
        SERVICE_NAME: 'baseline',
        P2P_BOOTSTRAPS: pm.addr,
      }
      // As the allocator runs instances (mtc/base's entrypoint requires no-new-privileges).
      const args = ['run', '-d', '--network', 'host', '--security-opt', 'no-new-privileges']
      args.push('--label', label)
      for (const [k, v] of Object.entries(env)) args.push('-e', `${k}=${v}`)
      args.push(
        '-v',
        `${pskFile}:/run/mtc/swarm.key:ro`,
        '-v',
        `${keyFile}:/run/mtc/identity.key:ro`,
        IMAGE,
      )
      const t0 = performance.now()
      await before?.()
      await docker(args)
      const url = `http://127.0.0.1:${servicePort}/`
      await waitFor('docker run answers', async () => (await fetch(url)).status === 200, {
        timeoutMs: 30_000,
        intervalMs: 5,
      })
      const dt = performance.now() - t0
      await removeContainers(label)
      return dt
    }
    const dockerRun: number[] = []
    for (let i = 0; i < trials; i++) dockerRun.push(await dockerRunToFirstResponse())

    progress(`${fetchTrials} cold starts with the image fetched over the overlay`)
    // 2. Image fetched over the overlay: removed from Docker and from the allocator's cache.
    const fetched: number[] = []
    let fetchFailed = 0
    const loadRun: number[] = []
    for (let i = 0; i < fetchTrials; i++) {
      await cleanInstances()
      await docker(['rmi', '-f', IMAGE])
      await rm(join(allocData, 'blobs', 'sha256'), { recursive: true, force: true })
      await mkdir(join(allocData, 'blobs', 'sha256'), { recursive: true })
      await must(cli(['add', '--file', tar, IMAGE, `fetch-${i}`]))
      const url = `http://127.0.0.1:${port}/fetch-${i}/`
      if (!(await firstByteInto(fetched, url, 120_000))) fetchFailed++
      // Baseline: docker load of the tarball, then docker run to the first response.
      await cleanInstances()
      await docker(['rmi', '-f', imageId])
      loadRun.push(await dockerRunToFirstResponse(() => docker(['load', '-q', '-i', tar])))
    }

    progress(`burst of ${BURST}`)
    // 3. Burst: 50 concurrent first requests to a service with no instance.
    await cleanInstances()
    await must(cli(['add', '--image-id', imageId, IMAGE, 'burst']))
    const burst = await Promise.allSettled(
      Array.from({ length: BURST }, () => timeToFirstByte(`http://127.0.0.1:${port}/burst/`)),
    )
    const failed = burst.filter((r) => r.status === 'rejected').length
    const burstContainers = (
      await docker([
        'ps',
        '-q',
        '--filter',
        `label=${LABEL_MANAGED_BY}=${alloc.peerId}`,
        '--filter',
        'label=mtc.service=burst',
      ])
    ).stdout
      .split('\n')
      .filter((l) => l !== '').length
    await cleanInstances()

    const m = summary(mesh)
    const d = summary(dockerRun)
    const f = summary(fetched)
    const l = summary(loadRun)
    await report(
      'coldstart',
      [
        {
          what: `cold start, image on host (p50/p99 of ${trials})`,
          value: `${ms(m.p50)} / ${ms(m.p99)}, ${meshFailed} failed`,
          baseline: `docker run ${ms(d.p50)} / ${ms(d.p99)}`,
          ratio: `${(m.p50 / d.p50).toFixed(2)}x p50`,
          target: `p50 ≤ ${TARGET.p50Ms / 1000} s, p99 ≤ ${TARGET.p99Ms / 1000} s, 0 failed`,
          met: meshFailed === 0 && m.p50 <= TARGET.p50Ms && m.p99 <= TARGET.p99Ms,
        },
        {
          what: `cold start, image fetched (p50/p99 of ${fetchTrials})`,
          value: `${ms(f.p50)} / ${ms(f.p99)}, ${fetchFailed} failed`,
          baseline: `docker load+run ${ms(l.p50)} / ${ms(l.p99)}`,
          ratio: `${(f.p50 / l.p50).toFixed(2)}x p50`,
          target: 'report',
        },
        {
          what: `burst: ${BURST} concurrent first requests`,
          value: `${burstContainers} container(s), ${failed} failed`,
          target: '1 container, 0 failed',
          met: burstContainers === 1 && failed === 0,
        },
      ],
      { mesh, meshFailed, dockerRun, fetched, fetchFailed, loadRun, burstContainers, failed },
    )
  })
}

await main()
process.exit(0)
