/**
 * hl-service's disk: a full disk, the --max-storage quota and garbage collection of
 * tarballs no record references, with real hl-service processes on one real etcd and
 * hl-cli as a user runs it.
 */
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdir, readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import { formatSwarmKey, generatePsk, loadOrCreateKey, MeshNode, RpcStream } from '@mtc/p2pnode'
import { freePort, httpGet, LocalMesh, metricValue, runToEnd, stopAll, waitFor } from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { EtcdSupervisor } from '../src/daemon/etcd-supervisor.ts'
import { HL_PUT } from '../src/protocol.ts'
import { startHl as startHlOf } from './fixtures/hl.ts'
import { classicTarball, fakeImage } from './fixtures/tarballs.ts'

const psk = generatePsk()
let mesh: LocalMesh
let dir: { path: string; remove: () => Promise<void> }
let pskFile: string
let etcd: EtcdSupervisor
let node: MeshNode

/** A tarball file holding one fake image tagged `tag` with a layer of `layerBytes`. */
async function tarballFile(name: string, tag: string, layerBytes = 4096) {
  const image = fakeImage(name, layerBytes)
  const bytes = await classicTarball([{ image, repoTags: [tag] }])
  const path = join(dir.path, `${name}.tar`)
  await writeFile(path, bytes)
  return { path, bytes, hex: createHash('sha256').update(bytes).digest('hex') }
}

const startHl = (args: string[], dataDir?: string) =>
  startHlOf(mesh, ['--etcd', etcd.endpoints.join(','), ...args], dataDir)

type Hl = Awaited<ReturnType<typeof startHl>>

async function sweepCount(hl: Hl): Promise<number> {
  const { body } = await httpGet(`${hl.metrics}/metrics`)
  return metricValue(body, 'mtc_hl_blob_sweeps_total', { outcome: 'ok' }) ?? 0
}

function cli(hl: Hl, args: string[]) {
  return runToEnd('hl-cli', ['--psk-file', pskFile, '--hl', hl.addr, ...args])
}

async function files(dataDir: string): Promise<{ blobs: string[]; tmp: string[] }> {
  const list = (p: string) => readdir(p).catch(() => [] as string[])
  return {
    blobs: (await list(join(dataDir, 'blobs', 'sha256'))).sort(),
    tmp: await list(join(dataDir, 'tmp')),
  }
}

before(async () => {
  mesh = await LocalMesh.create({ swarmKey: formatSwarmKey(psk), prefix: 'mtc-hl-storage-' })
  dir = { path: mesh.dir, remove: () => mesh.stop() }
  pskFile = mesh.pskFile
  await mesh.startBootstrap()
  etcd = new EtcdSupervisor({
    dataDir: join(dir.path, 'etcd'),
    clientPort: await freePort(),
    peerPort: await freePort(),
  })
  await etcd.start()
  node = await MeshNode.startClient({
    role: 'test',
    psk,
    privateKey: await loadOrCreateKey(join(dir.path, 'test.key')),
  })
})

after(async () => {
  await node?.stop()
  await stopAll()
  await etcd?.stop()
  await dir?.remove()
})

describe('a full disk', () => {
  let mountpoint: string
  let mounted = false
  let hl: Hl | undefined

  before(async () => {
    mountpoint = join(dir.path, 'small-disk')
    await mkdir(mountpoint)
    // 2 MiB of tmpfs: the data directory's disk, too small for a 3 MiB tarball.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', mountpoint])
    mounted = true
  })

  after(async () => {
    await hl?.proc.stop() // hl-service must let go of the mount first
    if (mounted) execFileSync('umount', [mountpoint])
  })

  it('refuses an upload with ERR_STORAGE_FULL (exit 6), leaves no file and keeps serving', async () => {
    hl = await startHl([], join(mountpoint, 'hl-data'))
    const big = await tarballFile('big', 'mtc/big:1', 3 * 1024 * 1024)
    const r = await cli(hl, ['add', '--file', big.path, 'mtc/big:1', 'big'])
    assert.equal(r.code, 6, r.stderr)
    assert.match(
      r.stderr,
      /^hl-cli: hl-service's disk is full \(ENOSPC [^\n]*\(ERR_STORAGE_FULL\)\n$/,
    )
    assert.deepEqual(await files(hl.dataDir), { blobs: [], tmp: [] })
    assert.equal((await cli(hl, ['get', 'big'])).code, 3)

    // The same process goes on serving, and stores what fits.
    const small = await tarballFile('small', 'mtc/small:1', 100 * 1024)
    const ok = await cli(hl, ['add', '--file', small.path, 'mtc/small:1', 'small'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.deepEqual(await files(hl.dataDir), { blobs: [small.hex], tmp: [] })
    const { body } = await httpGet(`${hl.metrics}/metrics`)
    assert.equal(
      metricValue(body, 'mtc_hl_requests_total', { op: 'put', outcome: 'ERR_STORAGE_FULL' }),
      1,
    )
    assert.equal((await cli(hl, ['delete', 'small'])).code, 0)
  })
})

describe('the --max-storage quota', () => {
  let hl: Hl

  before(async () => {
    hl = await startHl(['--max-storage', '300K'])
  })

  it('refuses an upload that would exceed it before reading its bytes, and frees room on delete', async () => {
    const first = await tarballFile('q1', 'mtc/q1:1', 200 * 1024)
    const add = await cli(hl, ['add', '--file', first.path, 'mtc/q1:1', 'q1'])
    assert.equal(add.code, 0, add.stderr)

    // Announced 200 KiB: refused at once, although not one byte of the tarball is sent.
    const second = await tarballFile('q2', 'mtc/q2:1', 200 * 1024)
    const stream = await node.libp2p.dialProtocol(multiaddr(hl.addr), HL_PUT)
    const rpc = new RpcStream(stream)
    await rpc.writeJson({
      record: { name: 'q2', image: 'mtc/q2:1' },
      upload: { size: second.bytes.length },
    })
    const reply = await rpc.readJson<{ ok: boolean; code: string; message: string }>()
    assert.deepEqual([reply.ok, reply.code], [false, 'ERR_QUOTA_EXCEEDED'], reply.message)
    stream.abort(new Error('done'))

    const r = await cli(hl, ['add', '--file', second.path, 'mtc/q2:1', 'q2'])
    assert.equal(r.code, 6, r.stderr)
    assert.match(r.stderr, /^hl-cli: [^\n]*storage quota[^\n]*\(ERR_QUOTA_EXCEEDED\)\n$/)
    assert.deepEqual(await files(hl.dataDir), { blobs: [first.hex], tmp: [] })

    // Deleting the first service collects its tarball: the second fits now.
    assert.equal((await cli(hl, ['delete', 'q1'])).code, 0)
    await waitFor('the deleted tarball collected', async () =>
      (await files(hl.dataDir)).blobs.length === 0 ? true : undefined,
    )
    const again = await cli(hl, ['add', '--file', second.path, 'mtc/q2:1', 'q2'])
    assert.equal(again.code, 0, again.stderr)
    const { body } = await httpGet(`${hl.metrics}/metrics`)
    assert.equal(
      metricValue(body, 'mtc_hl_blob_storage_bytes', { kind: 'stored' }),
      second.bytes.length,
    )
    assert.equal(metricValue(body, 'mtc_hl_blob_storage_bytes', { kind: 'quota' }), 300 * 1024)
    assert.equal((await cli(hl, ['delete', 'q2'])).code, 0)
  })
})

describe('garbage collection of tarballs', () => {
  let hl: Hl

  before(async () => {
    hl = await startHl([])
  })

  it('deletes a tarball when its service is deleted, and keeps one another record still uses', async () => {
    const tar = await tarballFile('gc1', 'mtc/gc1:1')
    assert.equal((await cli(hl, ['add', '--file', tar.path, 'mtc/gc1:1', 'gc-a'])).code, 0)
    assert.equal((await cli(hl, ['add', '--file', tar.path, 'mtc/gc1:1', 'gc-b'])).code, 0)
    assert.deepEqual((await files(hl.dataDir)).blobs, [tar.hex])

    const sweeps = await sweepCount(hl)
    assert.equal((await cli(hl, ['delete', 'gc-a'])).code, 0)
    // gc-b still references it: a sweep ran after the delete and kept it.
    await waitFor('a sweep after the delete', async () =>
      (await sweepCount(hl)) > sweeps ? true : undefined,
    )
    assert.deepEqual((await files(hl.dataDir)).blobs, [tar.hex])
    const { body } = await httpGet(`${hl.metrics}/metrics`)
    assert.equal(metricValue(body, 'mtc_hl_blob_collected_total'), 0)

    assert.equal((await cli(hl, ['delete', 'gc-b'])).code, 0)
    await waitFor('the unreferenced tarball deleted', async () =>
      (await files(hl.dataDir)).blobs.length === 0 ? true : undefined,
    )
  })

  it('keeps a replaced tarball while the record history names it (rollback), deletes both with the record', async () => {
    const v1 = await tarballFile('v1', 'mtc/app:1')
    const v2 = await tarballFile('v2', 'mtc/app:2')
    assert.equal((await cli(hl, ['add', '--file', v1.path, 'mtc/app:1', 'app'])).code, 0)
    const sweeps = await sweepCount(hl)
    assert.equal((await cli(hl, ['add', '--file', v2.path, 'mtc/app:2', 'app'])).code, 0)
    const get = await cli(hl, ['--json', 'get', 'app'])
    assert.equal(JSON.parse(get.stdout).blob.digest, `sha256:${v2.hex}`)
    // A sweep after the replacement keeps v1: a rollback to it needs no upload.
    await waitFor('a sweep after the replacement', async () =>
      (await sweepCount(hl)) > sweeps ? true : undefined,
    )
    assert.deepEqual((await files(hl.dataDir)).blobs.sort(), [v1.hex, v2.hex].sort())
    assert.equal((await cli(hl, ['delete', 'app'])).code, 0)
    await waitFor('both tarballs deleted with the record and its history', async () => {
      const { blobs } = await files(hl.dataDir)
      return blobs.includes(v1.hex) || blobs.includes(v2.hex) ? undefined : true
    })
  })

  it('does not collect an upload in progress while other tarballs are collected', async () => {
    const slow = await tarballFile('slow', 'mtc/slow:1', 256 * 1024)
    const doomed = await tarballFile('doomed', 'mtc/doomed:1')
    assert.equal((await cli(hl, ['add', '--file', doomed.path, 'mtc/doomed:1', 'doomed'])).code, 0)

    // An upload that has sent half its bytes...
    const stream = await node.libp2p.dialProtocol(multiaddr(hl.addr), HL_PUT)
    const rpc = new RpcStream(stream)
    await rpc.writeJson({
      record: { name: 'slow', image: 'mtc/slow:1' },
      upload: { size: slow.bytes.length },
    })
    const half = slow.bytes.length >> 1
    await rpc.writeChunks(
      (async function* () {
        yield slow.bytes.subarray(0, half)
        // ...while a delete makes another tarball garbage and a sweep runs.
        assert.equal((await cli(hl, ['delete', 'doomed'])).code, 0)
        await waitFor('the deleted tarball collected', async () =>
          (await files(hl.dataDir)).blobs.includes(doomed.hex) ? undefined : true,
        )
        assert.equal((await files(hl.dataDir)).tmp.length, 1)
        yield slow.bytes.subarray(half)
      })(),
    )
    const reply = await rpc.readJson<{ ok: boolean; record: { blob: { digest: string } } }>()
    assert.equal(reply.ok, true, JSON.stringify(reply))
    assert.equal(reply.record.blob.digest, `sha256:${slow.hex}`)
    await rpc.close()
    assert.ok((await files(hl.dataDir)).blobs.includes(slow.hex))
    assert.equal((await cli(hl, ['get', 'slow'])).code, 0)
  })

  it('removes at start the tarballs no record references (left by a crash before the record)', async () => {
    assert.equal(await hl.proc.stop(), 0)
    const orphan = 'ab'.repeat(32)
    await writeFile(join(hl.dataDir, 'blobs', 'sha256', orphan), 'left behind')
    const kept = (await files(hl.dataDir)).blobs.filter((b) => b !== orphan)
    hl = await startHl([], hl.dataDir)
    await waitFor('the orphan collected', async () =>
      (await files(hl.dataDir)).blobs.includes(orphan) ? undefined : true,
    )
    assert.deepEqual((await files(hl.dataDir)).blobs, kept)
  })
})

describe('garbage collection with two hl-services on one etcd', () => {
  it('a service deleted through one frees its tarball on the other at its next sweep', async () => {
    const a = await startHl(['--gc-interval', '1s'])
    const b = await startHl([])
    const tar = await tarballFile('shared-gc', 'mtc/shared-gc:1')
    assert.equal(
      (await cli(a, ['add', '--file', tar.path, 'mtc/shared-gc:1', 'shared-gc'])).code,
      0,
    )
    const sweeps = await sweepCount(a)
    await waitFor('a periodic sweep on a', async () =>
      (await sweepCount(a)) > sweeps ? true : undefined,
    )
    assert.deepEqual((await files(a.dataDir)).blobs, [tar.hex]) // referenced: kept

    assert.equal((await cli(b, ['delete', 'shared-gc'])).code, 0)
    await waitFor('a collects the tarball b made garbage', async () =>
      (await files(a.dataDir)).blobs.length === 0 ? true : undefined,
    )
    await a.proc.stop()
    await b.proc.stop()
  })
})
