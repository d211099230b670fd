import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { writeFileAtomic } from '@mtc/p2pnode'

/** The file in the data directory that names the allocator owning its containers. */
export const OWNER_ID_FILE = 'allocator-id'

const OWNER_ID = /^[0-9a-f]{16}$/

/**
 * The ID that marks the containers of the allocator using `dataDir` (their owner label),
 * created on first use. It belongs to the data directory, which also holds the instances'
 * keys, not to the peer identity: an allocator restarted with a new identity, or with
 * none (`--key-file` not given), still re-adopts, counts and reaps its containers.
 */
export async function loadOrCreateOwnerId(dataDir: string): Promise<string> {
  const path = join(dataDir, OWNER_ID_FILE)
  const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined
    throw err
  })
  if (text != null) {
    const id = text.trim()
    if (!OWNER_ID.test(id)) throw new Error(`${path} does not hold an allocator ID (16 hex digits)`)
    return id
  }
  const id = randomBytes(8).toString('hex')
  await writeFileAtomic(path, `${id}\n`, 0o600)
  return id
}
