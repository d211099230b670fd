import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { after, before, describe, it } from 'node:test'
import { freePort, type LaunchedDaemon } from '@mtc/testkit'
import { type BenchMesh, SMALL, startBenchMesh } from '../src/bench-mesh.ts'

/** Everything a connection to `port` receives after sending `request`, until it closes or
 * `enough` says so (bounded by 10 s). */
async function exchange(
  port: number,
  request: string,
  enough: (got: Buffer) => boolean,
): Promise<{ got: Buffer; closed: boolean }> {
  const socket = connect(port, '127.0.0.1')
  const chunks: Buffer[] = []
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no complete answer in 10 s: ${Buffer.concat(chunks).toString('latin1')}`))
    }, 10_000)
    const done = (closed: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resolve({ got: Buffer.concat(chunks), closed })
    }
    socket.on('data', (chunk) => {
      chunks.push(chunk)
      if (enough(Buffer.concat(chunks))) done(false)
    })
    socket.on('close', () => done(true))
    socket.on('error', () => {})
    socket.write(request)
  })
}

const GET = `GET ${SMALL} HTTP/1.1\r\nHost: bench\r\n\r\n`
/** Two 1 KB answers with their heads. */
const twoAnswers = (got: Buffer) =>
  got.toString('latin1').split('HTTP/1.1 200').length === 3 && got.length > 2048

/** An answer as compared: without Date (a second may pass between two) and without the
 * Connection and Keep-Alive headers, which each server sets for its own client connection. */
const comparable = (b: Buffer) =>
  b.toString('latin1').replace(/\r\n(Date|Connection|Keep-Alive): [^\r]*/gi, '')

describe('floor-gateway (the bench floors)', () => {
  // One mesh for all: a service proxy in front of hello-world-server, one in front of a
  // port where nothing listens.
  let bench: BenchMesh
  let hello: LaunchedDaemon
  let nothing: LaunchedDaemon
  before(async () => {
    bench = await startBenchMesh({ prefix: 'mtc-floor-test-' })
    hello = await bench.serviceProxy('hello-world-server', bench.helloPort)
    nothing = await bench.serviceProxy('nothing-there', await freePort())
  })
  after(() => bench?.stop())

  it('splice: relays pipelined requests and their answers byte for byte to the service behind a service proxy', async () => {
    const splice = await bench.floorGateway('splice', hello)
    const direct = await exchange(bench.helloPort, GET + GET, twoAnswers)
    const spliced = await exchange(splice.port, GET + GET, twoAnswers)
    assert.equal(spliced.closed, false)
    // Byte for byte but the Date headers.
    const dateless = (b: Buffer) => b.toString('latin1').replace(/\r\nDate: [^\r]*/gi, '')
    assert.equal(dateless(spliced.got), dateless(direct.got))
  })

  it('http: answers pipelined requests as the service does, and refuses a body of either framing', async () => {
    const floor = await bench.floorGateway('http', hello)
    const direct = await exchange(bench.helloPort, GET + GET, twoAnswers)
    const relayed = await exchange(floor.port, GET + GET, twoAnswers)
    assert.equal(relayed.closed, false)
    assert.equal(comparable(relayed.got), comparable(direct.got))
    const post = `POST ${SMALL} HTTP/1.1\r\nHost: bench\r\nContent-Length: 2\r\n\r\nhi`
    const chunked = `GET ${SMALL} HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n`
    for (const request of [post, chunked]) {
      const refused = await exchange(floor.port, request, (got) => got.includes('\r\n\r\n'))
      assert.match(refused.got.toString('latin1'), /^HTTP\/1\.1 400 /)
    }
  })

  for (const mode of ['splice', 'http'] as const) {
    it(`${mode}: closes the connection without an answer when the service proxy cannot reach its service`, async () => {
      const floor = await bench.floorGateway(mode, nothing)
      const answer = await exchange(floor.port, GET, () => false)
      assert.equal(answer.closed, true)
      assert.equal(answer.got.length, 0)
    })
  }
})
