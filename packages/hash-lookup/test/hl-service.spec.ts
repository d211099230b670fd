import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { after, before, describe, it } from 'node:test'
import {
  formatSwarmKey,
  generatePsk,
  loadOrCreateKey,
  MeshNode,
  RPC_IDLE_TIMEOUT_MS,
  RpcStream,
} from '@mtc/p2pnode'
import {
  freePort,
  httpGet,
  type LaunchedDaemon,
  LocalMesh,
  metricValue,
  runToEnd,
  stopAll,
  waitFor,
} from '@mtc/testkit'
import { multiaddr } from '@multiformats/multiaddr'
import { HashLookupClient } from '../src/client.ts'
import { EtcdSupervisor } from '../src/daemon/etcd-supervisor.ts'
import { HL_GET, HL_PUT } from '../src/protocol.ts'
import { startHl as startHlOf } from './fixtures/hl.ts'
import { classicTarball, fakeImage, ociTarball } from './fixtures/tarballs.ts'

const psk = generatePsk()
let mesh: LocalMesh
let dir: { path: string; remove: () => Promise<void> }
let pskFile: string
let writerKey: string
let pm: LaunchedDaemon
let hl: Awaited<ReturnType<typeof startHl>>
let etcdPorts: { client: number; peer: number }
let client: HashLookupClient
let node: MeshNode

/** One data frame of the mtc RPC framing: the length as an unsigned LEB128 varint, then the bytes. */
function dataFrame(bytes: Uint8Array): Uint8Array {
  const length: number[] = []
  let v = bytes.byteLength
  do {
    length.push((v & 0x7f) | (v >= 0x80 ? 0x80 : 0))
    v = Math.floor(v / 128)
  } while (v > 0)
  return Buffer.concat([Uint8Array.from(length), bytes])
}

/** A tarball file on disk holding one fake image tagged `tag`. */
async function tarballFile(name: string, tag: string, layout: 'classic' | 'oci' = 'classic') {
  const image = fakeImage(name)
  const bytes =
    layout === 'classic'
      ? await classicTarball([{ image, repoTags: [tag] }])
      : await ociTarball(image, { name: tag })
  const path = join(dir.path, `${name}.tar`)
  await writeFile(path, bytes)
  return {
    path,
    bytes,
    image,
    digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
  }
}

let seq = 0
const startHl = (args: string[], dataDir?: string) => startHlOf(mesh, args, dataDir)

/** hl-cli as a user runs it, as the writer unless `key` says otherwise. */
function cli(args: string[], options: { key?: string; target?: string[] } = {}) {
  return runToEnd('hl-cli', [
    '--psk-file',
    pskFile,
    ...(options.target ?? ['--hl', hl.addr]),
    '--key-file',
    options.key ?? writerKey,
    ...args,
  ])
}

async function blobFiles(dataDir: string): Promise<{ blobs: string[]; tmp: string[] }> {
  const list = (p: string) => readdir(p).catch(() => [] as string[])
  return {
    blobs: await list(join(dataDir, 'blobs', 'sha256')),
    tmp: await list(join(dataDir, 'tmp')),
  }
}

before(async () => {
  mesh = await LocalMesh.create({ swarmKey: formatSwarmKey(psk), prefix: 'mtc-hl-' })
  dir = { path: mesh.dir, remove: () => mesh.stop() }
  pskFile = mesh.pskFile
  writerKey = join(dir.path, 'writer.key')
  const writerId = (
    await runToEnd('mtc-keygen', ['identity', '--key-file', writerKey])
  ).stdout.trim()

  pm = await mesh.startBootstrap()

  etcdPorts = { client: await freePort(), peer: await freePort() }
  hl = await startHl([
    '--new-etcd-cluster',
    '--etcd-client-port',
    String(etcdPorts.client),
    '--etcd-peer-port',
    String(etcdPorts.peer),
    '--writer',
    writerId,
  ])

  node = await MeshNode.startClient({
    role: 'test',
    psk,
    privateKey: await loadOrCreateKey(writerKey),
  })
  client = new HashLookupClient(node.libp2p, multiaddr(hl.addr))
})

after(async () => {
  await node?.stop()
  await stopAll()
  await dir?.remove()
})

describe('hl-service and hl-cli', () => {
  it('registers a service from a docker save tarball and serves record and blob back', async () => {
    const tar = await tarballFile('hello', 'mtc/hello-world-server:1.0')
    const add = await cli([
      'add',
      '--file',
      tar.path,
      '--soft-rtt',
      '20',
      '--hard-rtt',
      '100',
      'mtc/hello-world-server:1.0',
      'hello-world-server',
    ])
    assert.equal(add.code, 0, add.stderr)
    assert.match(add.stdout, /^added hello-world-server \(version \d+\)/)

    const get = await cli(['--json', 'get', 'hello-world-server'])
    assert.equal(get.code, 0, get.stderr)
    const record = JSON.parse(get.stdout)
    assert.equal(record.imageId, tar.image.imageId)
    assert.deepEqual(record.blob, { digest: tar.digest, size: tar.bytes.length })
    assert.deepEqual(record.perf, { softRttMs: 20, hardRttMs: 100 })

    // The blob comes back byte-exact over the overlay.
    const hash = createHash('sha256')
    await client.fetchBlob(tar.digest, async (chunks) => {
      for await (const c of chunks) hash.update(c)
    })
    assert.equal(`sha256:${hash.digest('hex')}`, tar.digest)

    const list = await cli(['list'])
    assert.equal(list.code, 0, list.stderr)
    assert.match(list.stdout, /^NAME\s+IMAGE/)
    assert.match(list.stdout, /hello-world-server\s+mtc\/hello-world-server:1.0/)
  })

  it('accepts the OCI layout newer Docker writes', async () => {
    const tar = await tarballFile('oci', 'registry.local/team/oci-app:2', 'oci')
    const add = await cli(['add', '--file', tar.path, 'registry.local/team/oci-app:2', 'oci-app'])
    assert.equal(add.code, 0, add.stderr)
    assert.equal((await client.get('oci-app')).imageId, tar.image.imageId)
  })

  it('finds hl-service through the DHT when given only a bootstrap', async () => {
    const get = await cli(['get', 'hello-world-server'], { target: ['--bootstrap', pm.addr] })
    assert.equal(get.code, 0, get.stderr)
    assert.match(get.stdout, /^name\s+hello-world-server$/m)
  })

  it('registers a registry image by ID without a tarball, and needs the ID to', async () => {
    const id = `sha256:${'ab'.repeat(32)}`
    const ok = await cli(['add', '--image-id', id, `nginx@sha256:${'cd'.repeat(32)}`, 'web'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.equal((await client.get('web')).imageId, id)
    const missing = await cli(['add', 'nginx:1.27', 'web2'])
    assert.equal(missing.code, 2)
    assert.match(missing.stderr, /needs --image-id/)
  })

  it('keeps the scaling settings of hl-cli add; get shows them, defaults included', async () => {
    const id = `sha256:${'ab'.repeat(32)}`
    const add = await cli([
      'add',
      '--image-id',
      id,
      '--concurrency',
      '2',
      '--max-instances',
      '3',
      'nginx:1.27',
      'scaled',
    ])
    assert.equal(add.code, 0, add.stderr)
    const json = await cli(['--json', 'get', 'scaled'])
    assert.equal(json.code, 0, json.stderr)
    const shown = JSON.parse(json.stdout)
    assert.deepEqual(
      [shown.concurrency, shown.minInstances, shown.maxInstances],
      [2, 0, 3],
      json.stdout,
    )
    const text = await cli(['get', 'scaled'])
    assert.match(text.stdout, /^concurrency\s+2$/m)
    assert.match(text.stdout, /^instances\s+0 to 3$/m)
    const bad = await cli([
      'add',
      '--image-id',
      id,
      '--min-instances',
      '4',
      '--max-instances',
      '3',
      'nginx:1.27',
      'scaled',
    ])
    assert.equal(bad.code, 2, bad.stderr)
    assert.match(bad.stderr, /--min-instances \(4\) must not exceed --max-instances \(3\)/)
    assert.equal((await client.get('scaled')).maxInstances, 3)
  })

  it('an unknown service is exit 3 with one clear line', async () => {
    const r = await cli(['get', 'nobody-here'])
    assert.equal(r.code, 3)
    assert.equal(r.stderr, 'hl-cli: Unknown service "nobody-here" (ERR_UNKNOWN_SERVICE)\n')
  })

  it('refuses bad names, references and digests, writing nothing', async () => {
    const before = (await client.list()).records.length
    for (const args of [
      ['add', '--image-id', `sha256:${'ab'.repeat(32)}`, 'nginx:1', 'Bad_Name'],
      ['add', '--image-id', `sha256:${'ab'.repeat(32)}`, 'Nginx:1', 'ok-name'],
      ['add', '--image-id', 'sha256:short', 'nginx:1', 'ok-name'],
    ]) {
      const r = await cli(args)
      assert.notEqual(r.code, 0, args.join(' '))
      assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr)
    }
    // The service validates too, whatever a client sends.
    await assert.rejects(
      client.put({
        record: { name: '-bad-', image: 'nginx:1', imageId: `sha256:${'ab'.repeat(32)}` },
      }),
      { name: 'InvalidNameError' },
    )
    await assert.rejects(
      client.put({
        record: {
          name: 'x',
          image: 'nginx:1',
          imageId: `sha256:${'ab'.repeat(32)}`,
          perf: { softRttMs: 50, hardRttMs: 10 },
        },
      }),
      { code: 'ERR_INVALID_RECORD' },
    )
    assert.equal((await client.list()).records.length, before)
  })

  it('refuses a non-writer', async () => {
    const other = join(dir.path, 'other.key')
    const r = await cli(['add', '--image-id', `sha256:${'ab'.repeat(32)}`, 'nginx:1', 'sneaky'], {
      key: other,
    })
    assert.equal(r.code, 1)
    assert.match(r.stderr, /may not add services \(ERR_FORBIDDEN\)/)
    const del = await cli(['delete', 'web'], { key: other })
    assert.match(del.stderr, /ERR_FORBIDDEN/)
    await assert.rejects(client.get('sneaky'), { name: 'NotFoundError' })
    assert.equal((await client.get('web')).name, 'web')
  })

  it('a tarball without the named image, or a tampered one, leaves no record, blob or temp file', async () => {
    const before = await blobFiles(hl.dataDir)
    const tar = await tarballFile('other', 'mtc/other:1')
    const r = await cli(['add', '--file', tar.path, 'mtc/hello-world-server:9', 'mismatch'])
    assert.equal(r.code, 1)
    assert.match(r.stderr, /ERR_IMAGE_MISMATCH/)

    const image = fakeImage('tampered')
    const tampered = join(dir.path, 'tampered.tar')
    await writeFile(
      tampered,
      await classicTarball([{ image, repoTags: ['mtc/t:1'] }], { tamperConfig: true }),
    )
    const t = await cli(['add', '--file', tampered, 'mtc/t:1', 'tampered'])
    assert.equal(t.code, 1)
    assert.match(t.stderr, /ERR_INVALID_TARBALL/)

    await assert.rejects(client.get('mismatch'), { name: 'NotFoundError' })
    await assert.rejects(client.get('tampered'), { name: 'NotFoundError' })
    assert.deepEqual(await blobFiles(hl.dataDir), before)
  })

  it('a connection cut mid-upload leaves no record, blob or temp file', async () => {
    const before = await blobFiles(hl.dataDir)
    const tar = await tarballFile('cut', 'mtc/cut:1')
    const stream = await node.libp2p.dialProtocol(multiaddr(hl.addr), HL_PUT)
    const rpc = new RpcStream(stream)
    await rpc.writeJson({
      record: { name: 'cut', image: 'mtc/cut:1' },
      upload: { size: tar.bytes.length },
    })
    // Half the tarball as data frames, without the end marker (RpcStream.writeChunks always
    // sends it): the upload is in progress, staged in a temporary file.
    stream.send(dataFrame(tar.bytes.subarray(0, tar.bytes.length >> 1)))
    await waitFor('the upload staged in a temporary file', async () => {
      const now = await blobFiles(hl.dataDir)
      return now.tmp.length === 1 && now.tmp[0].endsWith('.part')
    })
    // Then the connection dies. Cleaned up well before the 30 s idle timeout would.
    stream.abort(new Error('cut'))
    await waitFor(
      'the partial upload cleaned up',
      async () => {
        const now = await blobFiles(hl.dataDir)
        return now.tmp.length === 0 && now.blobs.length === before.blobs.length
      },
      { timeoutMs: RPC_IDLE_TIMEOUT_MS / 2 },
    )
    assert.deepEqual(await blobFiles(hl.dataDir), before)
    await assert.rejects(client.get('cut'), { name: 'NotFoundError' })
  })

  it('needs exactly one of --etcd and --new-etcd-cluster: exit 2 with one line', async () => {
    for (const etcd of [
      [],
      ['--etcd', `http://127.0.0.1:${etcdPorts.client}`, '--new-etcd-cluster'],
    ]) {
      const dataDir = join(dir.path, `hl-bad-${seq++}`)
      const r = await runToEnd('hl-service', [
        '--psk-file',
        pskFile,
        '--listen',
        '/ip4/127.0.0.1/tcp/0',
        '--data-dir',
        dataDir,
        ...etcd,
      ])
      assert.equal(r.code, 2, `${etcd.join(' ')}: ${r.stderr}`)
      assert.equal(
        r.stderr,
        'hl-service: give exactly one of --etcd URL[,URL...] and --new-etcd-cluster\n',
      )
    }
  })

  it('refuses an upload above --max-blob-size, leaving no record, blob or temp file', async (t) => {
    // A second hl-service on the same etcd, with a 1 KiB limit.
    const small = await startHl([
      '--etcd',
      `http://127.0.0.1:${etcdPorts.client}`,
      '--max-blob-size',
      '1K',
    ])
    t.after(() => small.proc.stop())
    const tar = await tarballFile('big', 'mtc/big:1')
    assert.ok(tar.bytes.length > 1024, `${tar.bytes.length} bytes`)
    const r = await cli(['add', '--file', tar.path, 'mtc/big:1', 'too-big'], {
      target: ['--hl', small.addr],
    })
    assert.equal(r.code, 1, r.stderr)
    assert.match(r.stderr, /ERR_BLOB_TOO_LARGE/)
    assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr)
    await waitFor(
      'no temporary file left',
      async () => (await blobFiles(small.dataDir)).tmp.length === 0,
    )
    assert.deepEqual(await blobFiles(small.dataDir), { blobs: [], tmp: [] })
    await assert.rejects(client.get('too-big'), { name: 'NotFoundError' })
    // The same upload within the default limit is taken.
    const ok = await cli(['add', '--file', tar.path, 'mtc/big:1', 'big-enough'])
    assert.equal(ok.code, 0, ok.stderr)
  })

  it('refuses an oversized protocol message', async () => {
    const stream = await node.libp2p.dialProtocol(multiaddr(hl.addr), HL_GET)
    const rpc = new RpcStream(stream, { maxMessageBytes: 1024 * 1024 })
    await rpc.writeJson({ name: 'x'.repeat(200_000) })
    const reply = await rpc.readJson<{ ok: boolean; code: string }>()
    assert.deepEqual([reply.ok, reply.code], [false, 'ERR_PROTOCOL'])
  })

  it('history and rollback through hl-cli; a non-writer may not roll back', async () => {
    const id = (c: string) => `sha256:${c.repeat(64)}`
    const add = async (tag: string, imageId: string) => {
      const r = await cli([
        '--json',
        'add',
        '--image-id',
        imageId,
        '--health-path',
        '/healthz',
        `acme/app:${tag}`,
        'versioned',
      ])
      assert.equal(r.code, 0, r.stderr)
      return JSON.parse(r.stdout) as { version: number; healthPath: string }
    }
    const v1 = await add('1', id('1'))
    assert.equal(v1.healthPath, '/healthz')
    await add('2', id('2'))
    const history = await cli(['--json', 'history', 'versioned'])
    assert.equal(history.code, 0, history.stderr)
    assert.deepEqual(
      (JSON.parse(history.stdout) as Array<{ imageId: string }>).map((r) => r.imageId),
      [id('2'), id('1')],
    )
    const other = join(dir.path, 'other.key')
    const refused = await cli(['rollback', 'versioned'], { key: other })
    assert.match(refused.stderr, /may not roll back services \(ERR_FORBIDDEN\)/)
    const back = await cli(['--json', 'rollback', 'versioned'])
    assert.equal(back.code, 0, back.stderr)
    const record = JSON.parse(back.stdout) as { imageId: string; version: number }
    assert.equal(record.imageId, id('1'))
    assert.ok(record.version > v1.version)
    assert.equal((await client.get('versioned')).imageId, id('1'))
    const missing = await cli(['rollback', '--to', '1', 'versioned'])
    assert.equal(missing.code, 3, missing.stderr)
    assert.match(missing.stderr, /has no version 1 \(kept: /)
  })

  it('deletes with optimistic concurrency: a stale version is exit 4', async () => {
    const version = (await client.get('web')).version
    const stale = await cli(['delete', '--expect-version', String(version - 1), 'web'])
    assert.equal(stale.code, 4, stale.stderr)
    const ok = await cli(['delete', '--expect-version', String(version), 'web'])
    assert.equal(ok.code, 0, ok.stderr)
    assert.equal((await cli(['get', 'web'])).code, 3)
  })

  it('exports its metrics', async () => {
    const { body } = await httpGet(`${hl.metrics}/metrics`)
    assert.ok((metricValue(body, 'mtc_hl_requests_total', { op: 'put', outcome: 'ok' }) ?? 0) >= 2)
    assert.ok(
      (metricValue(body, 'mtc_hl_requests_total', { op: 'get', outcome: 'ERR_UNKNOWN_SERVICE' }) ??
        0) >= 1,
    )
    assert.equal(metricValue(body, 'mtc_hl_etcd_up'), 1)
    assert.ok((metricValue(body, 'mtc_hl_blob_stored_bytes_total') ?? 0) > 0)
    assert.ok((metricValue(body, 'mtc_hl_blob_served_bytes_total') ?? 0) > 0)
    assert.match(body, /mtc_hl_operation_duration_seconds_bucket\{le="0.005",op="get"\}/)
  })

  it('keeps records and blobs across a restart of hl-service and its etcd', async () => {
    const digest = (await client.get('hello-world-server')).blob!.digest
    assert.equal(await hl.proc.stop(), 0)
    hl = await startHl(
      [
        '--new-etcd-cluster',
        '--etcd-client-port',
        String(etcdPorts.client),
        '--etcd-peer-port',
        String(etcdPorts.peer),
      ],
      hl.dataDir,
    )
    client = new HashLookupClient(node.libp2p, multiaddr(hl.addr))
    assert.equal((await client.get('hello-world-server')).blob!.digest, digest)
    const size = await client.fetchBlob(digest, async (chunks) => {
      for await (const _ of chunks) {
        // drain
      }
    })
    assert.ok(size > 0)
  })
})

describe('hl-service on an external etcd', () => {
  let etcd: EtcdSupervisor
  let etcdInit: ConstructorParameters<typeof EtcdSupervisor>[0]
  let a: Awaited<ReturnType<typeof startHl>>
  let b: Awaited<ReturnType<typeof startHl>>

  before(async () => {
    etcdInit = {
      dataDir: join(dir.path, 'external-etcd'),
      clientPort: await freePort(),
      peerPort: await freePort(),
    }
    etcd = new EtcdSupervisor(etcdInit)
    await etcd.start()
    const url = etcd.endpoints.join(',')
    a = await startHl(['--etcd', url])
    b = await startHl(['--etcd', url])
  })

  after(async () => {
    await etcd.stop()
  })

  it('two hl-services on one etcd answer consistently', async () => {
    const id = `sha256:${'ef'.repeat(32)}`
    const add = await cli(['add', '--image-id', id, 'nginx:1.27', 'shared'], {
      target: ['--hl', a.addr],
    })
    assert.equal(add.code, 0, add.stderr)
    const get = await cli(['--json', 'get', 'shared'], { target: ['--hl', b.addr] })
    assert.equal(get.code, 0, get.stderr)
    assert.equal(JSON.parse(get.stdout).imageId, id)
  })

  it('fails fast with "registry unavailable" while etcd is down and recovers by itself', async () => {
    await etcd.stop()
    const t0 = Date.now()
    const down = await cli(['get', 'shared'], { target: ['--hl', a.addr] })
    assert.equal(down.code, 5, down.stderr)
    assert.match(down.stderr, /ERR_REGISTRY_UNAVAILABLE/)
    assert.ok(Date.now() - t0 < 8000, `took ${Date.now() - t0} ms`)

    etcd = new EtcdSupervisor(etcdInit)
    await etcd.start()
    await waitFor(
      'lookups resume',
      async () => (await cli(['get', 'shared'], { target: ['--hl', a.addr] })).code === 0,
      {
        timeoutMs: 20_000,
        intervalMs: 500,
      },
    )
  })
})
