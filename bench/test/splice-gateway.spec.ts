import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { describe, it } from 'node:test'
import { freePort } from '@mtc/testkit'
import { SMALL, startBenchMesh } from '../src/bench-mesh.ts'

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

describe('splice-gateway (the bench floor)', () => {
  it('relays pipelined requests and their answers byte for byte to the service behind a service proxy', async (t) => {
    const bench = await startBenchMesh({ prefix: 'mtc-splice-test-' })
    t.after(() => bench.stop())
    const service = await bench.serviceProxy('hello-world-server', bench.helloPort)
    const splice = await bench.spliceGateway(service)
    const direct = await exchange(bench.helloPort, GET + GET, twoAnswers)
    const spliced = await exchange(splice.port, GET + GET, twoAnswers)
    assert.equal(spliced.closed, false)
    // The same bytes but the Date headers (a second may pass between the two).
    const dateless = (b: Buffer) => b.toString('latin1').replace(/\r\nDate: [^\r]*/gi, '')
    assert.equal(dateless(spliced.got), dateless(direct.got))
  })

  it('closes the connection without a byte when the service proxy cannot reach its service', async (t) => {
    const bench = await startBenchMesh({ prefix: 'mtc-splice-test-' })
    t.after(() => bench.stop())
    const service = await bench.serviceProxy('nothing-there', await freePort())
    const splice = await bench.spliceGateway(service)
    const answer = await exchange(splice.port, GET, () => false)
    assert.equal(answer.closed, true)
    assert.equal(answer.got.length, 0)
  })
})
