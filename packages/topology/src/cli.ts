/**
 * Builds a topology from a JSON file, prints its hosts and the measured RTT matrix, and
 * keeps it until Ctrl-C (or SIGTERM), then removes everything. With a "mesh" section
 * (a MeshSpec without its topology) it also starts the mesh on it and registers its
 * services; `--once` then sends one request through the first client and stops.
 *   node packages/topology/src/cli.ts packages/topology/examples/four-hosts.json [--once]
 *   node packages/topology/src/cli.ts packages/topology/examples/four-hosts-mesh.json [--once]
 */
import { readFile } from 'node:fs/promises'
import { HELLO_IMAGE, Mesh, type MeshSpec } from './mesh.ts'
import { Topology, type TopologySpec } from './topology.ts'

const USAGE = 'usage: topology SPEC.json [--once]'

const args = process.argv.slice(2)
const file = args.find((a) => !a.startsWith('--'))
if (file == null || args.some((a) => a.startsWith('--') && a !== '--once')) {
  console.error(USAGE)
  process.exit(2)
}
const once = args.includes('--once')
let spec: TopologySpec & { mesh?: Omit<MeshSpec, 'topology'> }
try {
  spec = JSON.parse(await readFile(file, 'utf8'))
} catch (err) {
  console.error(`topology: cannot read ${file}: ${(err as Error).message}`)
  process.exit(2)
}

const topo = await Topology.create({ hosts: spec.hosts, rtt: spec.rtt })
for (const h of topo.hosts) {
  console.log(`${h.padEnd(12)} ${topo.address(h).padEnd(12)} ip netns exec ${topo.netns(h)} …`)
}
for (const r of await topo.measureMatrix()) {
  console.log(
    `${`${r.a}-${r.b}`.padEnd(24)} configured ${String(r.configuredMs).padStart(5)} ms` +
      `  measured ${r.medianMs.toFixed(2).padStart(8)} ms (base ${r.baseMs.toFixed(2)} ms)` +
      `${r.ok ? '' : '  (out of tolerance)'}`,
  )
}
// Measured before the mesh starts: its start-up load would show in the probes.
const mesh = spec.mesh != null ? await startMesh(topo, spec.mesh) : undefined
const client = spec.mesh?.clients[0]
const service = spec.mesh?.services?.[0]?.name
if (mesh != null && client != null && service != null) {
  console.log(`try: ip netns exec ${topo.netns(client)} curl -s localhost:4200/${service}/`)
}

if (once) {
  let code = 0
  if (mesh != null && client != null && service != null) {
    const traced = await mesh.tracedRequests(`/${service}/`, 1, { client })
    const answer = traced.answers[0]
    const where = traced.servedBy.map((s) => s.host).join(', ') || 'unknown'
    console.log(
      `GET /${service}/ from ${client}: ${answer.status} in ${answer.ms.toFixed(0)} ms, ` +
        `served on ${where}`,
    )
    if (answer.status !== 200) code = 1
  }
  await mesh?.destroy()
  await topo.destroy()
  process.exit(code)
} else {
  console.log('running; Ctrl-C removes it')
  const keepAlive = setInterval(() => {}, 1 << 30)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      clearInterval(keepAlive)
      void (async () => {
        await mesh?.destroy()
        await topo.destroy()
        process.exit(0)
      })()
    })
  }
}

async function startMesh(t: Topology, m: Omit<MeshSpec, 'topology'>): Promise<Mesh> {
  console.log(`starting the mesh (dockerds, daemons, ${m.services?.[0]?.image ?? HELLO_IMAGE})…`)
  try {
    return await Mesh.start({ ...m, topology: t })
  } catch (err) {
    await t.destroy()
    console.error(`topology: the mesh did not start: ${(err as Error).message}`)
    process.exit(1)
  }
}
