import assert from 'node:assert/strict'
import { chmod, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, it } from 'node:test'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { tempDir } from '@mtc/testkit'
import { InvalidKeyFileError } from '../src/errors.ts'
import { loadOrCreateKey } from '../src/identity.ts'

describe('key file', () => {
  it('is created with mode 0600 and gives the same peer ID when loaded again', async () => {
    const dir = await tempDir()
    try {
      const path = join(dir.path, 'node.key')
      const first = peerIdFromPrivateKey(await loadOrCreateKey(path))
      assert.equal((await stat(path)).mode & 0o777, 0o600)
      const second = peerIdFromPrivateKey(await loadOrCreateKey(path))
      assert.equal(second.toString(), first.toString())
    } finally {
      await dir.remove()
    }
  })

  it('refuses a key file others can read', async () => {
    const dir = await tempDir()
    try {
      const path = join(dir.path, 'node.key')
      await loadOrCreateKey(path)
      await chmod(path, 0o644)
      await assert.rejects(loadOrCreateKey(path), /chmod 600/)
    } finally {
      await dir.remove()
    }
  })

  it('refuses a file that holds no key', async () => {
    const dir = await tempDir()
    try {
      const path = join(dir.path, 'node.key')
      await writeFile(path, 'not a key', { mode: 0o600 })
      await assert.rejects(loadOrCreateKey(path), InvalidKeyFileError)
    } finally {
      await dir.remove()
    }
  })
})
