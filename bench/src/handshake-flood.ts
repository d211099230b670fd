/**
 * Handshake flood against the real bootstrap (ping-monitor) and hl-service (issue 12 item
 * 6): 150 idle raw TCP connections from 127.0.0.2, each reopened 1 s after the daemon
 * closes it, while a new legitimate peer (a fresh node with the key each time) connects
 * once a second and measures an RTT over the new connection. The same connects without
 * the flood are the baseline. Before the handshake guard every connect under the flood
 * failed. Not part of `pnpm bench` (it measures a defence, not a speed).
 * Run: node bench/src/handshake-flood.ts
 */
import { connect, type Socket } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { formatSwarmKey, generatePsk, MeshNode, type Psk } from '@mtc/p2pnode'
import { LocalMesh, stopAll } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { quantile, withCleanup } from './stats.ts'

const FLOOD_CONNECTIONS = 150
const FLOOD_FROM = '127.0.0.2'
const REOPEN_MS = 1_000
/** The flood runs this long before the first legitimate connect. */
const FLOOD_WARMUP_MS = 1_500
const CONNECTS = 20
const CONNECT_GAP_MS = 1_000
const CONNECT_TIMEOUT_MS = 10_000

/** Idle connections from one address, each reopened REOPEN_MS after it closes. */
class Flood {
  private readonly sockets = new Set<Socket>()
  private readonly timers = new Set<NodeJS.Timeout>()
  private stopped = false
  opened = 0
  closedByServer = 0

  private readonly port: number

  constructor(port: number) {
    this.port = port
    for (let i = 0; i < FLOOD_CONNECTIONS; i++) this.open()
  }

  private open(): void {
    if (this.stopped) return
    const s = connect({ host: '127.0.0.1', port: this.port, localAddress: FLOOD_FROM })
    this.sockets.add(s)
    s.on('connect', () => this.opened++)
    s.on('data', () => {})
    s.on('error', () => {})
    s.on('close', () => {
      this.sockets.delete(s)
      if (this.stopped) return
      this.closedByServer++
      const t = setTimeout(() => {
        this.timers.delete(t)
        this.open()
      }, REOPEN_MS)
      this.timers.add(t)
    })
  }

  async stop(): Promise<void> {
    this.stopped = true
    for (const t of this.timers) clearTimeout(t)
    const closing = [...this.sockets].map((s) => new Promise((r) => s.once('close', r)))
    for (const s of this.sockets) s.destroy()
    await Promise.all(closing)
  }
}

/** CONNECTS fresh peers, one a second: each dials `addr` and measures one RTT. */
async function legitConnects(psk: Psk, addr: string) {
  const times: number[] = []
  const errors: string[] = []
  for (let i = 0; i < CONNECTS; i++) {
    const client = await MeshNode.startClient({ role: 'bench', psk })
    const t0 = performance.now()
    try {
      const signal = AbortSignal.timeout(CONNECT_TIMEOUT_MS)
      const conn = await client.libp2p.dial(multiaddr(addr), { signal })
      await client.rtt(conn.remotePeer, { signal })
      times.push(performance.now() - t0)
    } catch (err) {
      errors.push(`${(err as Error).name}: ${(err as Error).message}`)
    } finally {
      await client.stop()
    }
    await sleep(CONNECT_GAP_MS)
  }
  return { ok: times.length, times, errors }
}

function line(what: string, r: Awaited<ReturnType<typeof legitConnects>>): string {
  const t = r.times
  const fig =
    t.length === 0
      ? 'none'
      : `p50 ${quantile(t, 0.5).toFixed(0)} ms, max ${Math.max(...t).toFixed(0)} ms`
  const errs = r.errors.length === 0 ? '' : `; errors: ${[...new Set(r.errors)].join(' | ')}`
  return `${what}: ${r.ok}/${CONNECTS} connected (dial + RTT), ${fig}${errs}`
}

async function main(): Promise<void> {
  const psk = generatePsk()
  const mesh = await LocalMesh.create({ swarmKey: formatSwarmKey(psk), prefix: 'mtc-bench-flood-' })
  await withCleanup(
    async () => {
      await mesh.stop()
      await stopAll()
    },
    async () => {
      const bootstrap = await mesh.startBootstrap()
      const hl = await mesh.startHlService()
      for (const [name, addr] of [
        ['bootstrap (ping-monitor)', bootstrap.addr],
        ['hl-service', hl.addr],
      ]) {
        const port = Number(/\/tcp\/(\d+)/.exec(addr)?.[1])
        process.stdout.write(`${line(`${name}, no flood`, await legitConnects(psk, addr))}\n`)
        const flood = new Flood(port)
        await sleep(FLOOD_WARMUP_MS)
        const under = await legitConnects(psk, addr)
        const { opened, closedByServer } = flood
        await flood.stop()
        process.stdout.write(
          `${line(`${name}, under ${FLOOD_CONNECTIONS} idle connections from ${FLOOD_FROM}`, under)}; ` +
            `flood opened ${opened}, ${closedByServer} closed by the daemon\n`,
        )
      }
    },
  )
}

await main()
