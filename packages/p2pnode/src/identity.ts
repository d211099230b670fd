import { readFile, stat } from 'node:fs/promises'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import { writeFileAtomic } from './atomic-file.ts'
import { KEY_FILE_MAX_BYTES } from './constants.ts'
import { InvalidKeyFileError } from './errors.ts'

/**
 * The node's identity from `path`, created (Ed25519, mode 0600) when the file is
 * missing, so a daemon keeps its peer ID across restarts.
 */
export async function loadOrCreateKey(path: string): Promise<PrivateKey> {
  let info: Awaited<ReturnType<typeof stat>> | undefined
  try {
    info = await stat(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new InvalidKeyFileError(`cannot read key file ${path}: ${(err as Error).message}`)
    }
  }
  if (info == null) {
    const key = await generateKeyPair('Ed25519')
    await writeFileAtomic(path, privateKeyToProtobuf(key), 0o600)
    return key
  }
  // Like ssh: a private key others can read is not private any more.
  if ((Number(info.mode) & 0o077) !== 0) {
    throw new InvalidKeyFileError(
      `key file ${path} is accessible by others (mode ${(Number(info.mode) & 0o777).toString(8)}); run chmod 600`,
    )
  }
  if (Number(info.size) > KEY_FILE_MAX_BYTES) {
    throw new InvalidKeyFileError(`key file ${path} is too large to hold a key`)
  }
  try {
    return privateKeyFromProtobuf(await readFile(path))
  } catch (err) {
    throw new InvalidKeyFileError(
      `key file ${path} does not hold a libp2p private key: ${(err as Error).message}`,
    )
  }
}
