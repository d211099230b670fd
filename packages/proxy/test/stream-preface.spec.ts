import assert from 'node:assert/strict'
import { PassThrough } from 'node:stream'
import { describe, it } from 'node:test'
import { ProxyError } from '../src/errors.ts'
import {
  MAX_PREFACE_BYTES,
  PREFACE_OK,
  type Preface,
  PrefaceError,
  PrefaceReader,
  prefaceOk,
  prefaceRefusal,
  readPreface,
} from '../src/stream-preface.ts'

const b = (s: string): Buffer => Buffer.from(s, 'latin1')

/** Feeds `chunks` in order: the preface, and every byte after it (the rest of the chunk
 * that completed it, then the chunks not fed). */
function feed(chunks: string[]): { preface: Preface; rest: Buffer } | undefined {
  const reader = new PrefaceReader()
  for (let i = 0; i < chunks.length; i++) {
    const got = reader.push(b(chunks[i]))
    if (got != null)
      return { ...got, rest: Buffer.concat([got.rest, b(chunks.slice(i + 1).join(''))]) }
  }
  return undefined
}

describe('stream preface: reader', () => {
  it('reads +OK and hands back the bytes after it, in any chunking', () => {
    const wire = `${PREFACE_OK}HTTP/1.1 200 OK\r\n`
    for (let cut = 0; cut <= wire.length; cut++) {
      const got = feed([wire.slice(0, cut), wire.slice(cut)])
      assert.ok(got != null, `cut at ${cut}`)
      assert.deepEqual(got.preface, { ok: true })
      assert.equal(got.rest.toString('latin1'), 'HTTP/1.1 200 OK\r\n')
    }
    // One byte at a time.
    const got = feed([...wire])
    assert.deepEqual(got?.preface, { ok: true })
    assert.equal(got?.rest.toString('latin1'), 'HTTP/1.1 200 OK\r\n')
  })

  it('reads a refusal with its message, split anywhere', () => {
    const wire = prefaceRefusal('connect ECONNREFUSED 127.0.0.1:8080').toString('latin1')
    assert.equal(wire, '-ERR_SERVICE_UNREACHABLE connect ECONNREFUSED 127.0.0.1:8080\n')
    for (let cut = 1; cut < wire.length; cut++) {
      const got = feed([wire.slice(0, cut), wire.slice(cut)])
      assert.deepEqual(got?.preface, {
        ok: false,
        message: 'connect ECONNREFUSED 127.0.0.1:8080',
      })
    }
    assert.deepEqual(feed(['-ERR_SERVICE_UNREACHABLE\n'])?.preface, { ok: false, message: '' })
  })

  it('refuses oversized lines, with or without a newline', () => {
    const long = `-ERR_SERVICE_UNREACHABLE ${'x'.repeat(MAX_PREFACE_BYTES)}`
    assert.throws(() => feed([long]), PrefaceError)
    assert.throws(() => feed([`${long}\n`]), PrefaceError)
    // Split into small chunks: refused once the buffered part reaches the limit.
    const reader = new PrefaceReader()
    assert.throws(() => {
      for (let i = 0; i < long.length; i += 10) reader.push(b(long.slice(i, i + 10)))
    }, PrefaceError)
    // Exactly the limit, newline included, is accepted.
    const max = `-ERR_SERVICE_UNREACHABLE ${'y'.repeat(MAX_PREFACE_BYTES - 26)}\n`
    assert.equal(max.length, MAX_PREFACE_BYTES)
    assert.equal(feed([max])?.preface.ok, false)
  })

  it('refuses garbage as soon as it cannot be a preface', () => {
    // An HTTP answer from a peer that speaks no preface: refused at its first byte.
    assert.throws(() => new PrefaceReader().push(b('H')), PrefaceError)
    assert.throws(() => feed(['+OK \n']), PrefaceError)
    assert.throws(() => feed(['+ok\n']), PrefaceError)
    assert.throws(() => feed(['+OK\r\n']), PrefaceError)
    assert.throws(() => feed(['-ERR_OTHER x\n']), PrefaceError)
    assert.throws(() => feed(['-ERR_SERVICE_UNREACHABLEX\n']), PrefaceError)
    assert.throws(() => feed(['\n']), PrefaceError)
  })

  it('writes a refusal on one line of printable ASCII within the limit', () => {
    const line = prefaceRefusal(`bad\nthing\u0000 ${'z'.repeat(1000)}`)
    assert.ok(line.length <= MAX_PREFACE_BYTES)
    assert.equal(line.indexOf(0x0a), line.length - 1)
    assert.match(line.toString('latin1'), /^-ERR_SERVICE_UNREACHABLE bad thing z+\n$/)
    assert.equal(prefaceRefusal('\n').toString(), '-ERR_SERVICE_UNREACHABLE unreachable\n')
    assert.equal(prefaceOk().toString(), '+OK\n')
  })
})

describe('stream preface: readPreface on a stream', () => {
  it('resolves on +OK and leaves what followed to be read next', async () => {
    const s = new PassThrough()
    const read = readPreface(s)
    s.write('+O')
    s.write('K\nHTTP/1.1 200 OK\r\n')
    await read
    s.end('rest')
    const chunks: Buffer[] = []
    for await (const c of s) chunks.push(c as Buffer)
    assert.equal(Buffer.concat(chunks).toString(), 'HTTP/1.1 200 OK\r\nrest')
  })

  it('rejects a refusal as ERR_SERVICE_UNREACHABLE', async () => {
    const s = new PassThrough()
    const read = readPreface(s)
    s.end(prefaceRefusal('connect ECONNREFUSED'))
    await assert.rejects(read, (err: ProxyError) => {
      assert.equal(err.code, 'ERR_SERVICE_UNREACHABLE')
      assert.match(err.message, /ECONNREFUSED/)
      return true
    })
  })

  it('rejects EOF before the newline, errors, garbage and silence as ERR_INSTANCE_UNREACHABLE', async () => {
    const cases: Array<[string, (s: PassThrough) => void, number?]> = [
      ['eof', (s) => s.end('+OK')],
      ['empty eof', (s) => s.end()],
      ['error', (s) => s.destroy(new Error('stream reset'))],
      ['close', (s) => s.destroy()],
      ['garbage', (s) => s.write('HTTP/1.1 400 Bad Request\r\n')],
      ['oversize', (s) => s.write(`-ERR_SERVICE_UNREACHABLE ${'x'.repeat(300)}`)],
      ['silence', () => {}, 50],
    ]
    for (const [name, act, timeoutMs] of cases) {
      const s = new PassThrough()
      const read = readPreface(s, timeoutMs)
      act(s)
      await assert.rejects(read, (err: ProxyError) => {
        assert.ok(err instanceof ProxyError, name)
        assert.equal(err.code, 'ERR_INSTANCE_UNREACHABLE', name)
        return true
      })
      s.destroy()
    }
  })
})
