import { stat } from 'node:fs/promises'
import { peerIdFromPrivateKey } from '@libp2p/peer-id'
import { writeFileAtomic } from './atomic-file.ts'
import { MTC_VERSION } from './constants.ts'
import { UsageError } from './errors.ts'
import { type CommandSpec, helpText, parseCommandLine } from './flags.ts'
import { loadOrCreateKey } from './identity.ts'
import { derivePsk, formatSwarmKey, generatePsk } from './psk.ts'

export const KEYGEN_COMMAND: CommandSpec = {
  name: 'mtc-keygen',
  summary: 'make the keys of an mtc mesh',
  usage: 'swarm-key [--out PATH] [--psk PASSPHRASE] | identity --key-file PATH',
  flags: {
    out: {
      type: 'string',
      arg: 'PATH',
      help: 'write the swarm key here (mode 0600) instead of stdout',
    },
    psk: {
      type: 'string',
      arg: 'PASSPHRASE',
      help: 'derive the swarm key from this passphrase (the same key --psk gives)',
    },
    force: { type: 'boolean', help: 'overwrite an existing --out file' },
    'key-file': {
      type: 'string',
      arg: 'PATH',
      help: 'identity file to create (mode 0600) or read; prints its peer ID',
    },
  },
  positionals: { min: 1, max: 1 },
  epilog: `Commands:
  swarm-key   print or write a new random private-network key (libp2p swarm key format)
  identity    create (if missing) a node identity file and print its peer ID,
              e.g. for hl-service --writer`,
}

/** mtc-keygen's main; returns the exit code. */
export async function keygenMain(
  argv: string[],
  io: { stdout: (t: string) => unknown; stderr: (t: string) => unknown } = {
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
  },
): Promise<number> {
  try {
    const parsed = parseCommandLine(KEYGEN_COMMAND, argv)
    if (parsed.kind === 'help') {
      io.stdout(helpText(KEYGEN_COMMAND, MTC_VERSION))
      return 0
    }
    if (parsed.kind === 'version') {
      io.stdout(`mtc-keygen ${MTC_VERSION}\n`)
      return 0
    }
    const { values, positionals } = parsed
    if (positionals[0] === 'swarm-key') {
      const passphrase = values.psk as string | undefined
      const text = formatSwarmKey(passphrase != null ? await derivePsk(passphrase) : generatePsk())
      const out = values.out as string | undefined
      if (out == null) {
        io.stdout(text)
        return 0
      }
      if (values.force !== true && (await exists(out))) {
        throw new UsageError(`${out} exists; pass --force to overwrite it`)
      }
      await writeFileAtomic(out, text, 0o600)
      return 0
    }
    if (positionals[0] === 'identity') {
      const keyFile = values['key-file'] as string | undefined
      if (keyFile == null) throw new UsageError('identity needs --key-file PATH')
      const key = await loadOrCreateKey(keyFile)
      io.stdout(`${peerIdFromPrivateKey(key).toString()}\n`)
      return 0
    }
    throw new UsageError(`unknown command "${positionals[0]}" (swarm-key or identity)`)
  } catch (err) {
    io.stderr(`mtc-keygen: ${(err as Error).message}\n`)
    return err instanceof UsageError ? 2 : 1
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path)
    return true
  } catch {
    return false
  }
}
