import { randomBytes, scrypt } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import {
  PSK_KEY_LENGTH,
  PSK_SCRYPT_N,
  PSK_SCRYPT_P,
  PSK_SCRYPT_R,
  PSK_SCRYPT_SALT,
  SWARM_KEY_CODEC,
  SWARM_KEY_HEADER,
  SWARM_KEY_MAX_FILE_BYTES,
} from './constants.ts'
import { InvalidPskError } from './errors.ts'

/** A 32-byte private-network key; what @libp2p/pnet protects connections with. */
export type Psk = Uint8Array

/** Text of a swarm key file: the libp2p/ipfs `/key/swarm/psk/1.0.0/` format. */
export function formatSwarmKey(psk: Psk): string {
  if (psk.byteLength !== PSK_KEY_LENGTH) {
    throw new InvalidPskError(`a PSK is ${PSK_KEY_LENGTH} bytes, got ${psk.byteLength}`)
  }
  return `${SWARM_KEY_HEADER}\n${SWARM_KEY_CODEC}\n${Buffer.from(psk).toString('hex')}\n`
}

/** Parses a swarm key file strictly: header, `/base16/` codec, 64 hex digits. */
export function parseSwarmKey(text: string): Psk {
  const lines = text.split(/\r?\n/).map((l) => l.trim())
  while (lines.length > 0 && lines[lines.length - 1] === '') lines.pop()
  if (lines.length !== 3 || lines[0] !== SWARM_KEY_HEADER) {
    throw new InvalidPskError(`not a swarm key file (expected "${SWARM_KEY_HEADER}" header)`)
  }
  if (lines[1] !== SWARM_KEY_CODEC) {
    throw new InvalidPskError(`unsupported swarm key encoding "${lines[1]}" (only /base16/)`)
  }
  if (!/^[0-9a-fA-F]{64}$/.test(lines[2])) {
    throw new InvalidPskError('swarm key must be 64 hex digits')
  }
  return Uint8Array.from(Buffer.from(lines[2], 'hex'))
}

export async function readSwarmKeyFile(path: string): Promise<Psk> {
  let data: Buffer
  try {
    data = await readFile(path)
  } catch (err) {
    throw new InvalidPskError(`cannot read PSK file ${path}: ${(err as Error).message}`)
  }
  if (data.byteLength > SWARM_KEY_MAX_FILE_BYTES) {
    throw new InvalidPskError(`PSK file ${path} is too large to be a swarm key`)
  }
  try {
    return parseSwarmKey(data.toString('utf8'))
  } catch (err) {
    throw new InvalidPskError(`PSK file ${path}: ${(err as Error).message}`)
  }
}

export function generatePsk(): Psk {
  return Uint8Array.from(randomBytes(PSK_KEY_LENGTH))
}

/**
 * The key of a passphrase: scrypt(passphrase as UTF-8, salt "mtc/psk/v1", N=2^17, r=8,
 * p=1, 32 bytes). Written as a swarm key file it interoperates with `--psk-file`.
 */
export async function derivePsk(passphrase: string): Promise<Psk> {
  if (passphrase.length === 0) throw new InvalidPskError('the PSK passphrase is empty')
  return await new Promise((resolve, reject) => {
    scrypt(
      passphrase.normalize('NFC'),
      PSK_SCRYPT_SALT,
      PSK_KEY_LENGTH,
      // maxmem must exceed 128 * N * r bytes (128 MiB here); Node's default is 32 MiB.
      { N: PSK_SCRYPT_N, r: PSK_SCRYPT_R, p: PSK_SCRYPT_P, maxmem: 256 * 1024 * 1024 },
      (err, key) => (err != null ? reject(err) : resolve(Uint8Array.from(key))),
    )
  })
}
