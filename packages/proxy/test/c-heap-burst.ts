/**
 * Child of idle-memory.spec.ts: leaves the C heap as a burst of proxy traffic does, then
 * runs one idle release and prints Private_Dirty (bytes) at each step as JSON:
 *
 *   node c-heap-burst.ts trim|gc-only
 *
 * The burst: 8 concurrent 20 MiB responses from a Node HTTP server through a byte relay
 * (as the service proxy splices), all on loopback. Every socket read is a 64 KiB malloc
 * and the data a small one; what is left freed between live chunks stays resident.
 * `settled` is after V8's memory-reducing GCs (what the release did before malloc_trim),
 * `released` after the release under test: `trim` the module's own, `gc-only` V8's GC.
 */
import { readFileSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { memoryReducingGc, startIdleMemoryRelease } from '../src/idle-memory.ts'

const STREAMS = 8
const MIB_PER_STREAM = 20

const privateDirty = (): number =>
  Number(/Private_Dirty:\s+(\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1]) * 1024

async function listen(server: net.Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as net.AddressInfo).port
}

const mib = Buffer.alloc(1 << 20, 'x')
const service = http.createServer((_req, res) => {
  let left = MIB_PER_STREAM
  res.writeHead(200, { 'content-length': MIB_PER_STREAM << 20 })
  const write = (): void => {
    while (left > 0) {
      left--
      if (!res.write(mib)) {
        res.once('drain', write)
        return
      }
    }
    res.end()
  }
  write()
})
const servicePort = await listen(service)
const relay = net.createServer((client) => {
  const upstream = net.connect(servicePort, '127.0.0.1')
  client.pipe(upstream).on('error', () => {})
  upstream.pipe(client).on('error', () => {})
})
const relayPort = await listen(relay)

function download(): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: relayPort, path: '/', agent: false }, (res) => {
        let bytes = 0
        res.on('data', (d: Buffer) => {
          bytes += d.byteLength
        })
        res.on('end', () => resolve(bytes))
        res.on('error', reject)
      })
      .on('error', reject)
  })
}

const mode = process.argv[2]
const gc = memoryReducingGc()

/** V8's GC until Private_Dirty stops falling (at most 5 rounds): what the GC alone gives
 * back. One round is not enough: a Buffer's C memory is freed by its finalizer after the
 * GC that found it dead, and glibc returns a freed top of its heap on the spot, so a later
 * GC could still return tens of MB (one CI run: 112.0 → 73.5 MB with the "gc-only" mode). */
async function settle(): Promise<number> {
  let last = Number.POSITIVE_INFINITY
  for (let round = 0; round < 5; round++) {
    gc()
    await sleep(20)
    const now = privateDirty()
    if (last - now < 1e6) return now
    last = now
  }
  return last
}

const baseline = await settle()
const bytes = await Promise.all(Array.from({ length: STREAMS }, download))
if (bytes.some((b) => b !== MIB_PER_STREAM << 20)) throw new Error(`short download: ${bytes}`)
relay.close()
service.close()
const settled = await settle()
await new Promise<void>((resolve) => {
  // One release, as the proxy runs it when its event loop turns quiet.
  const stop = startIdleMemoryRelease({
    sampleMs: 10,
    minGapMs: 60_000,
    utilization: () => 0,
    release: mode === 'gc-only' ? gc : undefined,
    log: (...args) => console.error(...args),
  })
  setTimeout(() => {
    stop()
    resolve()
  }, 100)
})
process.stdout.write(`${JSON.stringify({ baseline, settled, released: privateDirty() })}\n`)
process.exit(0)
