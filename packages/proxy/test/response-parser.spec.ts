import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { type ResponseHead, ResponseParseError, ResponseParser } from '../src/response-parser.ts'

/** What the parser reported for one response. */
interface Seen {
  head?: ResponseHead
  body: string
  complete: boolean
}

/** What the next response does goes into the returned Seen; `then` runs once it completes. */
function expect(p: ResponseParser, method = 'GET', then?: () => void): Seen {
  const seen: Seen = { body: '', complete: false }
  p.expect(method, {
    onHead: (h) => {
      seen.head = h
    },
    onBody: (c) => {
      seen.body += c.toString('latin1')
    },
    onComplete: () => {
      seen.complete = true
      then?.()
    },
  })
  return seen
}

/** Feeds `text` one byte at a time: framing must not depend on how bytes are chunked. */
function feedBytewise(p: ResponseParser, text: string): Buffer | undefined {
  const data = Buffer.from(text, 'latin1')
  for (let i = 0; i < data.length; i++) {
    const rest = p.push(data.subarray(i, i + 1))
    if (rest != null) return Buffer.concat([rest, data.subarray(i + 1)])
  }
  return undefined
}

describe('ResponseParser (llhttp, response mode)', () => {
  it('follows Content-Length, chunked and keep-alive responses in a row on one connection', () => {
    const p = new ResponseParser()
    const a = expect(p)
    p.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhel'))
    assert.equal(a.complete, false)
    p.push(Buffer.from('lo'))
    assert.deepEqual(a, {
      head: {
        status: 200,
        reason: 'OK',
        rawHeaders: ['Content-Length', '5', 'X-A', '1'],
        keepAlive: true,
      },
      body: 'hello',
      complete: true,
    })
    const b = expect(p)
    feedBytewise(
      p,
      'HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n',
    )
    assert.equal(b.head?.status, 404)
    assert.equal(b.body, 'abcde')
    assert.equal(b.complete, true)
  })

  it('hands a Content-Length body on as views of the bytes pushed, not copies', () => {
    const p = new ResponseParser()
    const views: Buffer[] = []
    let complete = false
    p.expect('GET', {
      onHead: () => {},
      onBody: (c) => {
        views.push(c)
      },
      onComplete: () => {
        complete = true
      },
    })
    const first = Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nabc')
    const second = Buffer.from('defgh')
    p.push(first)
    p.push(second)
    assert.equal(complete, true)
    assert.equal(Buffer.concat(views).toString(), 'abcdefgh')
    // Node's parser hands each body chunk over as a new Buffer: a 100 MB answer was copied.
    assert.equal(views[0].buffer, first.buffer)
    assert.equal(views[1].buffer, second.buffer)
  })

  it('stays in step when bodies and the next heads share chunks, in any chunking', () => {
    const stream =
      'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst' +
      'HTTP/1.1 201 Created\r\nContent-Length: 6\r\n\r\nsecond' +
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthird\r\n0\r\n\r\n' +
      'HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfourth'
    for (const step of [1, 2, 3, 7, 13, stream.length]) {
      const p = new ResponseParser()
      const seen: Seen[] = []
      const next = (): void => {
        seen.push(expect(p, 'GET', () => seen.length < 4 && next()))
      }
      next()
      const data = Buffer.from(stream, 'latin1')
      for (let i = 0; i < data.length; i += step) p.push(data.subarray(i, i + step))
      assert.deepEqual(
        seen.map((x) => [x.head?.status, x.body, x.complete]),
        [
          [200, 'first', true],
          [201, 'second', true],
          [200, 'third', true],
          [200, 'fourth', true],
        ],
        `chunks of ${step}`,
      )
    }
  })

  it('refuses what follows a Content-Length body when it is not a response', () => {
    const p = new ResponseParser()
    const a = expect(p)
    assert.throws(
      () => p.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSSH-2.0\r\n')),
      ResponseParseError,
    )
    assert.equal(a.body, 'ok')
    assert.equal(a.complete, true)
  })

  it('skips interim 1xx heads and reports the final one', () => {
    const p = new ResponseParser()
    const a = expect(p)
    p.push(
      Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n'),
    )
    assert.equal(a.head, undefined)
    p.push(Buffer.from('HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n'))
    assert.equal((a as Seen).head?.status, 201)
    assert.equal(a.complete, true)
  })

  it('a HEAD response, 204 and 304 have no body whatever their headers say', () => {
    const p = new ResponseParser()
    const a = expect(p, 'HEAD')
    p.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n'))
    assert.equal(a.complete, true)
    const b = expect(p)
    p.push(Buffer.from('HTTP/1.1 204 No Content\r\n\r\n'))
    assert.equal(b.complete, true)
    const c = expect(p)
    p.push(Buffer.from('HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n'))
    assert.equal(c.complete, true)
    // Still in step: the next response parses.
    const d = expect(p)
    p.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'))
    assert.equal(d.body, 'ok')
  })

  it('a response without length ends with the connection, and is not reusable', () => {
    const p = new ResponseParser()
    const a = expect(p)
    p.push(Buffer.from('HTTP/1.1 200 OK\r\n\r\nuntil the end'))
    assert.equal(a.complete, false)
    assert.equal(a.head?.keepAlive, false)
    p.finish()
    assert.equal(a.complete, true)
    assert.equal(a.body, 'until the end')
  })

  it('Connection: close and HTTP/1.0 are not reusable', () => {
    const p = new ResponseParser()
    const a = expect(p)
    p.push(Buffer.from('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n'))
    assert.equal(a.head?.keepAlive, false)
    const q = new ResponseParser()
    const b = expect(q)
    q.push(Buffer.from('HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n'))
    assert.equal(b.head?.keepAlive, false)
  })

  it('a 101 hands back the bytes that followed its head, in any chunking', () => {
    const p = new ResponseParser()
    const a = expect(p)
    const rest = feedBytewise(
      p,
      'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x02hi',
    )
    assert.equal(a.head?.status, 101)
    assert.equal(a.head?.keepAlive, false)
    assert.equal(p.upgraded, true)
    assert.equal(rest?.toString('latin1'), '\x81\x02hi')
  })

  it('keeps every header of a head with more than 32 (llhttp hands them over in parts)', () => {
    const p = new ResponseParser()
    const a = expect(p)
    let head = 'HTTP/1.1 200 OK\r\n'
    for (let i = 0; i < 50; i++) head += `X-H${i}: v${i}\r\n`
    feedBytewise(p, `${head}Content-Length: 0\r\n\r\n`)
    const raw = a.head?.rawHeaders ?? []
    assert.equal(raw.length, 51 * 2)
    assert.deepEqual(raw.slice(0, 2), ['X-H0', 'v0'])
    assert.deepEqual(raw.slice(98), ['X-H49', 'v49', 'Content-Length', '0'])
  })

  it('trailers of a chunked response do not leak into the next head', () => {
    const p = new ResponseParser()
    const a = expect(p)
    p.push(Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n'))
    let trailers = ''
    for (let i = 0; i < 40; i++) trailers += `X-T${i}: t\r\n`
    p.push(Buffer.from(`${trailers}\r\n`))
    assert.equal(a.complete, true)
    const b = expect(p)
    p.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'))
    assert.deepEqual(b.head?.rawHeaders, ['Content-Length', '0'])
  })

  it('refuses malformed and ambiguous responses (the service is out of step: no reuse)', () => {
    const bad = [
      'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n',
      'HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n',
      'HTTP/1.1 200 OK\nContent-Length: 0\n\n',
      'HTTP/1.1 2000 OK\r\n\r\n',
      'HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n',
      'HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n',
      'SSH-2.0-OpenSSH\r\n',
      '\x00\x01\x02',
    ]
    for (const text of bad) {
      const p = new ResponseParser()
      expect(p)
      assert.throws(
        () => p.push(Buffer.from(text, 'latin1')),
        ResponseParseError,
        JSON.stringify(text),
      )
    }
  })

  it('refuses a head over 16 KiB, and a response cut before its end', () => {
    const p = new ResponseParser()
    expect(p)
    assert.throws(
      () => p.push(Buffer.from(`HTTP/1.1 200 OK\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`)),
      ResponseParseError,
    )
    const q = new ResponseParser()
    expect(q)
    q.push(Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort'))
    assert.throws(() => q.finish(), ResponseParseError)
  })
})
