// CPU cost of liveness pings: N nodes in this process, fully connected, each connection
// holding one open stream (so it counts as busy), measured over 20 s.
//   node packages/p2pnode/bench/liveness-cost.ts 10 1000      # ping every 1 s
//   node packages/p2pnode/bench/liveness-cost.ts 10 3600000   # no pings: the baseline
import { MeshNode } from '../src/node.ts'
import { generatePsk } from '../src/psk.ts'

const N = Number(process.argv[2] ?? 10)
const busyIntervalMs = Number(process.argv[3] ?? 1000)
const psk = generatePsk()
const nodes: MeshNode[] = []
for (let i = 0; i < N; i++) {
  const n = await MeshNode.create({
    role: 't',
    version: '0',
    listen: ['/ip4/127.0.0.1/tcp/0'],
    bootstraps: [],
    psk,
    liveness: { busyIntervalMs },
  })
  await n.libp2p.handle('/mtc/hold/1.0.0', () => {})
  await n.start()
  nodes.push(n)
}
for (let i = 0; i < N; i++)
  for (let j = i + 1; j < N; j++) {
    const s = await nodes[i].libp2p.dialProtocol(
      nodes[j].libp2p.getMultiaddrs()[0],
      '/mtc/hold/1.0.0',
    )
    void s
  }
await new Promise((r) => setTimeout(r, 3000))
const c0 = process.cpuUsage()
const t0 = performance.now()
await new Promise((r) => setTimeout(r, 20000))
const c = process.cpuUsage(c0)
const secs = (performance.now() - t0) / 1000
let pings = 0
for (const n of nodes) {
  const m = await n.registry.getSingleMetric('mtc_liveness_pings_total')?.get()
  pings += m?.values.reduce((a, v) => a + v.value, 0) ?? 0
}
console.log(
  `${N} nodes, ${(N * (N - 1)) / 2} busy connections, interval ${busyIntervalMs} ms: cpu ${(((c.user + c.system) / 1e6 / secs) * 100).toFixed(1)} % of a core; ${pings} pings total`,
)
await Promise.all(nodes.map((n) => n.stop()))
