import assert from 'node:assert/strict'
import { PassThrough, Readable, Writable } from 'node:stream'
import { describe, it } from 'node:test'
import { pipe } from '../src/pipe.ts'

/** Resolves at 'close' (the 'error' before it is expected here). */
function closed(s: Readable | Writable): Promise<void> {
  s.on('error', () => {})
  return new Promise((resolve) => s.once('close', resolve))
}

function sink(chunks: Buffer[]): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk)
      cb()
    },
  })
}

describe('pipe', () => {
  it('copies everything and reports success once the destination finished', async () => {
    const chunks: Buffer[] = []
    const dst = sink(chunks)
    const { promise, resolve } = Promise.withResolvers<Error | null>()
    pipe(Readable.from([Buffer.from('a'), Buffer.from('b')]), dst, resolve)
    assert.equal(await promise, null)
    assert.ok(dst.writableFinished)
    assert.equal(Buffer.concat(chunks).toString(), 'ab')
  })

  it('a source error destroys the destination and is reported once', async () => {
    const src = new PassThrough()
    const dst = sink([])
    const calls: Array<Error | null> = []
    pipe(src, dst, (err) => calls.push(err))
    const dstClosed = closed(dst)
    src.write('x')
    src.destroy(new Error('cut'))
    await dstClosed
    await new Promise((r) => setImmediate(r))
    assert.ok(dst.destroyed)
    assert.equal(calls.length, 1)
    assert.equal(calls[0]?.message, 'cut')
  })

  it('a destination that goes away destroys the source', async () => {
    const src = new PassThrough()
    const dst = sink([])
    const calls: Array<Error | null> = []
    pipe(src, dst, (err) => calls.push(err))
    const srcClosed = closed(src)
    dst.destroy()
    await srcClosed
    await new Promise((r) => setImmediate(r))
    assert.ok(src.destroyed)
    assert.equal(calls.length, 1)
    assert.equal((calls[0] as NodeJS.ErrnoException).code, 'ERR_STREAM_PREMATURE_CLOSE')
  })
})
