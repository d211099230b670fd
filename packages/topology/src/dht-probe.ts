/**
 * Run inside a host's namespace by the mesh fixture: joins the mesh as a short-lived DHT
 * client and looks up providers until every wanted peer is found, so a client proxy
 * started afterwards finds the same (its own first lookup is cached for 30 s).
 *
 *   node dht-probe.ts PSK_FILE TIMEOUT_MS KIND=PEER,PEER... [KIND=...] -- BOOTSTRAP...
 *
 * Prints one JSON line {found: {kind: [peer...]}, ms} and exits 0 when all were found,
 * 1 otherwise.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import {
  type DiscoveryKind,
  findProviders,
  MeshNode,
  parseMultiaddrFlag,
  readSwarmKeyFile,
} from '@mtc/p2pnode'

const LOOKUP_TIMEOUT_MS = 3_000
const RETRY_MS = 250

const args = process.argv.slice(2)
const dash = args.indexOf('--')
const [pskFile, timeoutText, ...wants] = args.slice(0, dash)
const bootstraps = args.slice(dash + 1).map((b) => parseMultiaddrFlag('bootstrap', b))
const wanted = new Map<DiscoveryKind, string[]>(
  wants.map((w) => {
    const [kind, peers] = w.split('=')
    return [kind as DiscoveryKind, peers.split(',').filter((p) => p !== '')]
  }),
)
const started = performance.now()
const deadline = started + Number(timeoutText)
const found = new Map<DiscoveryKind, Set<string>>([...wanted.keys()].map((k) => [k, new Set()]))
const complete = () => [...wanted].every(([k, peers]) => peers.every((p) => found.get(k)?.has(p)))

const node = await MeshNode.create({
  role: 'probe',
  version: '0',
  listen: [],
  bootstraps,
  psk: await readSwarmKeyFile(pskFile),
  dhtClient: true,
})
await node.start()
for (let i = 0; i < 1_000 && !complete() && performance.now() < deadline; i++) {
  for (const kind of wanted.keys()) {
    const signal = AbortSignal.timeout(
      Math.max(1, Math.min(LOOKUP_TIMEOUT_MS, deadline - performance.now())),
    )
    const peers = await findProviders(node.libp2p, kind, '', { signal }).catch(() => [])
    for (const p of peers) found.get(kind)?.add(p.toString())
  }
  if (!complete()) await sleep(RETRY_MS)
}
await node.stop()
const out = Object.fromEntries([...found].map(([k, s]) => [k, [...s]]))
console.log(JSON.stringify({ found: out, ms: Math.round(performance.now() - started) }))
process.exit(complete() ? 0 : 1)
