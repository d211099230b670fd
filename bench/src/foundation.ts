/**
 * Foundation figures: connect time of two PSK peers, RTT on loopback (mtc's probe vs
 * libp2p's ping), and the memory of an idle ping-monitor with 10 connected peers.
 * Run: node bench/src/foundation.ts
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { formatSwarmKey, generatePsk, MeshNode, type Psk } from '@mtc/p2pnode'
import { LocalMesh, stopAll, waitFor } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { ms, report, rssBytes, summary, timeEach, withCleanup } from './stats.ts'

const TRIALS = 20
const PROBES = 500
const IDLE_PEERS = 10
const IDLE_SETTLE_MS = 15_000

async function node(psk: Psk | undefined, bootstraps: string[] = []): Promise<MeshNode> {
  const n = await MeshNode.create({
    role: 'bench',
    version: '0',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstraps: bootstraps.map((b) => multiaddr(b)),
    psk,
  })
  await n.start()
  return n
}

async function main(): Promise<void> {
  const psk = generatePsk()
  // Connect: a fresh client each trial so every dial is a full TCP + pnet + Noise + Yamux set-up.
  const connect = async (key: Psk | undefined) => {
    const server = await node(key)
    const out: number[] = []
    for (let i = 0; i < TRIALS; i++) {
      const client = await node(key)
      const t0 = performance.now()
      await client.libp2p.dial(server.libp2p.getMultiaddrs()[0])
      out.push(performance.now() - t0)
      await client.stop()
    }
    await server.stop()
    return out
  }
  const withPsk = summary(await connect(psk))
  const withoutPsk = summary(await connect(undefined))

  const a = await node(psk)
  const b = await node(psk)
  await b.libp2p.dial(a.libp2p.getMultiaddrs()[0])
  const probe = summary(await timeEach(PROBES, () => b.rtt(a.peerId)))
  const probeRtts: number[] = []
  for (let i = 0; i < PROBES; i++) probeRtts.push((await b.rtt(a.peerId)) * 1000)
  const libp2pPing: number[] = []
  for (let i = 0; i < PROBES; i++) libp2pPing.push(await b.libp2p.services.ping.ping(a.peerId))
  await b.stop()
  await a.stop()

  // Memory of an idle ping-monitor (a real process) with 10 peers connected and probed.
  const mesh = await LocalMesh.create({ swarmKey: formatSwarmKey(psk), prefix: 'mtc-bench-' })
  const peers: MeshNode[] = []
  const cleanup = async () => {
    for (const p of peers) await p.stop()
    await mesh.stop()
    await stopAll()
  }
  const rssKb = await withCleanup(cleanup, async () => {
    const { proc: pm, addr: pmAddr } = await mesh.startBootstrap()
    for (let i = 0; i < IDLE_PEERS; i++) peers.push(await node(psk, [pmAddr]))
    await waitFor('peers connected', () => peers.every((p) => p.connectedBootstraps().length === 1))
    await sleep(IDLE_SETTLE_MS)
    return (await rssBytes(pm!.child.pid!)) / 1024
  })

  await report(
    'foundation',
    [
      {
        what: `connect, PSK (p50/p99 of ${TRIALS})`,
        value: `${ms(withPsk.p50)} / ${ms(withPsk.p99)}`,
        baseline: `no PSK ${ms(withoutPsk.p50)} / ${ms(withoutPsk.p99)}`,
        ratio: `${(withPsk.p50 / withoutPsk.p50).toFixed(2)}x`,
      },
      {
        what: `RTT probe on loopback (p50/p99 of ${PROBES})`,
        value: `${ms(summary(probeRtts).p50)} / ${ms(summary(probeRtts).p99)}`,
        baseline: `libp2p ping ${summary(libp2pPing).p50} / ${summary(libp2pPing).p99} ms (whole ms)`,
      },
      { what: 'probe incl. stream open (p50/p99)', value: `${ms(probe.p50)} / ${ms(probe.p99)}` },
      {
        what: `ping-monitor RSS, idle, ${IDLE_PEERS} peers`,
        value: `${(rssKb / 1024).toFixed(1)} MiB`,
      },
    ],
    { withPsk, withoutPsk, probeRtts, libp2pPing, rssKb },
  )
}

await main()
process.exit(0)
