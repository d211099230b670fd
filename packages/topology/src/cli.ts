/**
 * Builds a topology from a JSON file, prints its hosts and the measured RTT matrix, and
 * keeps it until Ctrl-C (or SIGTERM), then removes everything.
 *   node packages/topology/src/cli.ts packages/topology/examples/four-hosts.json [--once]
 */
import { Topology } from './topology.ts'

const args = process.argv.slice(2)
const file = args.find((a) => !a.startsWith('--'))
if (file == null || args.some((a) => a.startsWith('--') && a !== '--once')) {
  console.error('usage: topology SPEC.json [--once]')
  process.exit(2)
}
const topo = await Topology.fromFile(file)
for (const h of topo.hosts) {
  console.log(`${h.padEnd(12)} ${topo.address(h).padEnd(12)} ip netns exec ${topo.netns(h)} …`)
}
for (const r of await topo.measureMatrix()) {
  console.log(
    `${`${r.a}-${r.b}`.padEnd(24)} configured ${String(r.configuredMs).padStart(5)} ms` +
      `  measured ${r.medianMs.toFixed(2).padStart(8)} ms${r.ok ? '' : '  (out of tolerance)'}`,
  )
}
if (args.includes('--once')) {
  await topo.destroy()
} else {
  console.log('running; Ctrl-C removes it')
  const keepAlive = setInterval(() => {}, 1 << 30)
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      clearInterval(keepAlive)
      void topo.destroy().then(() => process.exit(0))
    })
  }
}
