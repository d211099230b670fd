/**
 * Registry figures: get/add latency through hl-service (client → overlay → hl-service →
 * etcd) next to the same operations straight on etcd, and the upload throughput of a
 * 100 MB tarball next to writing the same bytes to disk with fsync.
 * Run: node bench/src/registry.ts
 */
import { createHash, randomBytes } from 'node:crypto'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { HashLookupClient } from '@mtc/hash-lookup'
import { createEtcdClient, EtcdSupervisor } from '@mtc/hash-lookup/daemon'
import { formatSwarmKey, generatePsk, MeshNode } from '@mtc/p2pnode'
import { freePort, LocalMesh, stopAll } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import tar from 'tar-stream'
import { ms, report, summary, timeEach, withCleanup } from './stats.ts'

const OPS = 1000
const UPLOAD_BYTES = 100 * 1024 * 1024

/** A `docker save`-shaped tarball with one image and a random layer of `layerBytes`. */
async function bigTarball(
  path: string,
  layerBytes: number,
): Promise<{ tag: string; size: number }> {
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [] },
    }),
  )
  const hex = createHash('sha256').update(config).digest('hex')
  const tag = 'bench/big:1'
  const pack = tar.pack()
  const fh = await open(path, 'w')
  const done = (async () => {
    for await (const chunk of pack) await fh.write(chunk as Buffer)
  })()
  pack.entry({ name: `${hex}.json`, size: config.length }, config)
  const layer = pack.entry({ name: 'layer/layer.tar', size: layerBytes })
  const block = randomBytes(1024 * 1024)
  for (let left = layerBytes; left > 0; left -= block.length) {
    const piece = block.subarray(0, Math.min(block.length, left))
    if (!layer.write(piece)) await new Promise<void>((r) => layer.once('drain', () => r()))
  }
  layer.end(Buffer.alloc(0))
  const manifest = Buffer.from(
    JSON.stringify([{ Config: `${hex}.json`, RepoTags: [tag], Layers: ['layer/layer.tar'] }]),
  )
  pack.entry({ name: 'manifest.json', size: manifest.length }, manifest)
  pack.finalize()
  await done
  const { size } = await fh.stat()
  await fh.close()
  return { tag, size }
}

async function main(): Promise<void> {
  const psk = generatePsk()
  const mesh = await LocalMesh.create({
    swarmKey: formatSwarmKey(psk),
    prefix: 'mtc-bench-registry-',
  })
  const dir = { path: mesh.dir }
  const etcd = new EtcdSupervisor({
    dataDir: join(dir.path, 'etcd'),
    clientPort: await freePort(),
    peerPort: await freePort(),
  })
  let node: MeshNode | undefined
  let etcdClient: ReturnType<typeof createEtcdClient> | undefined
  // Whatever started before a failure is stopped too (etcd, hl-service, the node).
  const cleanup = async () => {
    etcdClient?.close()
    await node?.stop()
    await mesh.stop()
    await stopAll()
    await etcd.stop()
  }

  await withCleanup(cleanup, async () => {
    await etcd.start()
    // hl-service on the bench's etcd, alone: no bootstrap, the client dials it.
    const { addr: hlAddr } = await mesh.start('hl-service', [
      '--etcd',
      etcd.endpoints.join(','),
      '--data-dir',
      join(dir.path, 'hl-data'),
    ])
    node = await MeshNode.startClient({ role: 'bench', psk })
    const client = new HashLookupClient(node.libp2p, multiaddr(hlAddr))
    const etcd3 = createEtcdClient(etcd.endpoints)
    etcdClient = etcd3
    const imageId = `sha256:${'ab'.repeat(32)}`
    const record = (i: number) => ({
      name: `bench-${i}`,
      image: 'nginx:1.27',
      imageId,
      perf: { softRttMs: 20, hardRttMs: 100 },
    })
    // Warm both paths (connections, JIT) before measuring.
    for (let i = 0; i < 50; i++) {
      await client.put({ record: record(i) })
      await client.get(`bench-${i}`)
      await etcd3.put(`/bench/${i}`).value(JSON.stringify(record(i)))
      await etcd3.get(`/bench/${i}`).string()
    }
    const etcdPut = await timeEach(
      OPS,
      async (i) => await etcd3.put(`/bench/${i}`).value(JSON.stringify(record(i))),
    )
    const etcdGet = await timeEach(OPS, (i) => etcd3.get(`/bench/${i}`).string())
    const hlAdd = await timeEach(OPS, (i) => client.put({ record: record(i) }))
    const hlGet = await timeEach(OPS, (i) => client.get(`bench-${i}`))

    const tarPath = join(dir.path, 'big.tar')
    const { tag, size } = await bigTarball(tarPath, UPLOAD_BYTES)
    const diskT0 = performance.now()
    {
      const src = await open(tarPath, 'r')
      const dst = await open(join(dir.path, 'copy.tar'), 'w')
      for await (const chunk of src.createReadStream({ highWaterMark: 256 * 1024 }))
        await dst.write(chunk as Buffer)
      await dst.sync()
      await dst.close()
      await src.close()
    }
    const diskMs = performance.now() - diskT0
    const upT0 = performance.now()
    const fh = await open(tarPath, 'r')
    await client.put(
      { record: { name: 'bench-big', image: tag } },
      { size, source: fh.createReadStream({ highWaterMark: 256 * 1024 }) },
    )
    await fh.close()
    const uploadMs = performance.now() - upT0
    const mbps = (bytes: number, t: number) => bytes / 1e6 / (t / 1000)

    const row = (what: string, mesh: number[], base: number[]) => {
      const m = summary(mesh)
      const b = summary(base)
      return {
        what,
        value: `${ms(m.p50)} / ${ms(m.p99)}`,
        baseline: `etcd ${ms(b.p50)} / ${ms(b.p99)}`,
        ratio: `+${ms(m.p50 - b.p50)} / +${ms(m.p99 - b.p99)}`,
        target: 'report the overhead',
      }
    }
    await report(
      'registry',
      [
        row(`registry get p50/p99 (${OPS} ops)`, hlGet, etcdGet),
        row(`registry add p50/p99 (${OPS} ops)`, hlAdd, etcdPut),
        {
          what: `upload ${(size / 1e6).toFixed(0)} MB tarball`,
          value: `${mbps(size, uploadMs).toFixed(1)} MB/s (${(uploadMs / 1000).toFixed(2)} s)`,
          baseline: `local copy+fsync ${mbps(size, diskMs).toFixed(1)} MB/s`,
          ratio: `${(mbps(size, uploadMs) / mbps(size, diskMs)).toFixed(2)}x`,
        },
      ],
      {
        hlGet: summary(hlGet),
        hlAdd: summary(hlAdd),
        etcdGet: summary(etcdGet),
        etcdPut: summary(etcdPut),
        size,
        uploadMs,
        diskMs,
      },
    )
  })
}

await main()
process.exit(0)
