import assert from 'node:assert/strict'
import { describe, it } from 'node:test'
import { InvalidPskError } from '../src/errors.ts'
import { derivePsk, formatSwarmKey, generatePsk, parseSwarmKey } from '../src/psk.ts'

describe('swarm key format', () => {
  it('round-trips a generated key', () => {
    const psk = generatePsk()
    assert.equal(psk.byteLength, 32)
    const text = formatSwarmKey(psk)
    assert.match(text, /^\/key\/swarm\/psk\/1\.0\.0\/\n\/base16\/\n[0-9a-f]{64}\n$/)
    assert.deepEqual(parseSwarmKey(text), psk)
  })

  it('accepts CRLF line ends and upper-case hex (files written on other systems)', () => {
    const hex = 'AB'.repeat(32)
    const psk = parseSwarmKey(`/key/swarm/psk/1.0.0/\r\n/base16/\r\n${hex}\r\n`)
    assert.equal(Buffer.from(psk).toString('hex'), hex.toLowerCase())
  })

  for (const [what, text] of [
    ['empty file', ''],
    ['wrong header', `/key/swarm/psk/2.0.0/\n/base16/\n${'a'.repeat(64)}`],
    ['other codec', `/key/swarm/psk/1.0.0/\n/base64/\n${'a'.repeat(64)}`],
    ['short key', `/key/swarm/psk/1.0.0/\n/base16/\n${'a'.repeat(62)}`],
    ['non-hex', `/key/swarm/psk/1.0.0/\n/base16/\n${'g'.repeat(64)}`],
    ['trailing junk', `/key/swarm/psk/1.0.0/\n/base16/\n${'a'.repeat(64)}\nmore`],
  ]) {
    it(`rejects ${what}`, () => {
      assert.throws(() => parseSwarmKey(text), InvalidPskError)
    })
  }
})

describe('passphrase KDF', () => {
  it('is scrypt(N=2^17, r=8, p=1, salt "mtc/psk/v1") as documented', async () => {
    // Computed independently: python3 -c "import hashlib; print(hashlib.scrypt(b'hello',
    //   salt=b'mtc/psk/v1', n=2**17, r=8, p=1, maxmem=2**28, dklen=32).hex())"
    const key = await derivePsk('hello')
    assert.equal(
      Buffer.from(key).toString('hex'),
      'c9bd94e8693f9b09044096b7e5066f63c9d440ea9b70711559e5d776b542f1c3',
    )
  })

  it('gives different keys for different passphrases and refuses an empty one', async () => {
    assert.notDeepEqual(await derivePsk('a'), await derivePsk('b'))
    await assert.rejects(derivePsk(''), InvalidPskError)
  })
})
