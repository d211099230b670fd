import { Mesh, regionHosts, regionsTopology, THREE_REGIONS } from '../../src/index.ts'

const R = THREE_REGIONS
const hostsOf = (r: string) => regionHosts(R, r)
const mesh = await Mesh.start({
  topology: regionsTopology(R),
  registry: 'a0',
  bootstraps: ['b0'],
  allocators: R.regions.flatMap((r) => hostsOf(r).slice(1, 5)),
  clients: [...R.regions.flatMap((r) => hostsOf(r).slice(5)), 'c0'],
  services: [{ name: 'hello-world-server', softRttMs: 20, hardRttMs: 35 }],
  discoverFrom: ['a5', 'b5', 'c5'],
  logLevel: 'info',
})
console.log('up', JSON.stringify(mesh.timings))
try {
  const a = await mesh.request('/hello-world-server/', { client: 'a5', timeoutMs: 120_000 })
  console.log('answer', a.status, a.body, a.error, a.ms)
  console.log('---- a5 proxy\n', mesh.log('a5', 'proxy').slice(-8000))
  for (const h of ['a1', 'a2', 'a3', 'a4'])
    console.log(`---- ${h} allocator\n`, mesh.log(h, 'allocator').slice(-4000))
  console.log('---- hl\n', mesh.log('a0', 'hl-service').slice(-4000))
} finally {
  await mesh.destroy()
}
