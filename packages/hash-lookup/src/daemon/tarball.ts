/**
 * Inspection of `docker save` tarballs, read as a stream in one pass.
 *
 * Two layouts exist. The classic one has `manifest.json` (`[{ Config, RepoTags, Layers }]`)
 * and the image config as `<hex>.json`. The OCI one (Docker 25+) has `index.json` pointing
 * at manifests under `blobs/sha256/`, tags in the descriptors' annotations, and also a
 * classic `manifest.json` whose `Config` is `blobs/sha256/<hex>`. Both are read and merged.
 *
 * The image ID is the sha256 of the image config, so every config read is hashed and must
 * match the digest its name or descriptor claims; otherwise the tarball is rejected.
 */

import { createHash } from 'node:crypto'
import tar from 'tar-stream'
import {
  MAX_OCI_INDEX_DEPTH,
  MAX_TARBALL_JSON_BYTES,
  MAX_TARBALL_METADATA_BYTES,
} from '../constants.ts'
import { HashLookupError, ImageMismatchError, InvalidTarballError } from '../errors.ts'
import {
  type ImageReference,
  isDigest,
  normalizeTaggedName,
  parseImageReference,
} from '../names.ts'

export interface TarballImage {
  /** `sha256:<hex>` of the image config. */
  imageId: string
  /** Tags as the tarball names them, e.g. `alpine:3.20` or `docker.io/library/alpine:3.20`. */
  repoTags: string[]
}

export interface TarballInspection {
  images: TarballImage[]
}

export interface TarballInspectorInit {
  /** Largest JSON entry read, default `MAX_TARBALL_JSON_BYTES`. */
  maxJsonBytes?: number
  /** Total JSON kept per tarball, default `MAX_TARBALL_METADATA_BYTES`. */
  maxMetadataBytes?: number
}

/** Receives a tarball chunk by chunk and inspects it on the way. */
export interface TarballSink {
  /** Resolves when the parser can take more (backpressure); rejects once inspection failed. */
  write(chunk: Uint8Array): Promise<void>
  /** Signals the end of the tarball and resolves to what it contains. */
  end(): Promise<TarballInspection>
  /** Gives up, e.g. because the source failed. */
  abort(): void
}

/** A JSON-looking entry kept for interpretation, with the sha256 of its bytes. */
interface JsonEntry {
  bytes: Buffer
  digest: string
}

const OCI_INDEX_TYPES = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
])
const CLASSIC_CONFIG = /^[0-9a-f]{64}\.json$/
const OCI_BLOB = /^blobs\/sha256\/[0-9a-f]{64}$/
const CONFIG_PATH = /^(?:blobs\/sha256\/)?([0-9a-f]{64})(?:\.json)?$/

export function createTarballSink(init: TarballInspectorInit = {}): TarballSink {
  const maxJsonBytes = init.maxJsonBytes ?? MAX_TARBALL_JSON_BYTES
  const maxMetadataBytes = init.maxMetadataBytes ?? MAX_TARBALL_METADATA_BYTES
  const extract = tar.extract()
  const failure = new AbortController()
  const collected = collectJsonEntries(extract, maxJsonBytes, maxMetadataBytes).catch((err) => {
    const error =
      err instanceof HashLookupError
        ? err
        : new InvalidTarballError(`Unreadable tarball: ${err.message}`, { cause: err })
    failure.abort(error)
    throw error
  })
  collected.catch(() => {}) // reported through write() and end()

  return {
    async write(chunk) {
      failure.signal.throwIfAborted()
      if (!extract.write(chunk)) await drained(extract, failure.signal)
    },
    async end() {
      failure.signal.throwIfAborted()
      extract.end(null) // streamx's typings want an argument; null writes nothing
      return interpret(await collected)
    },
    abort() {
      extract.destroy()
    },
  }
}

/** Inspects a whole tarball; throws InvalidTarballError if it is not a readable docker save. */
export async function inspectTarball(
  source: AsyncIterable<Uint8Array>,
  init?: TarballInspectorInit,
): Promise<TarballInspection> {
  const sink = createTarballSink(init)
  try {
    for await (const chunk of source) await sink.write(chunk)
  } catch (err) {
    sink.abort()
    throw err
  }
  return sink.end()
}

/**
 * The image of the tarball that `reference` names: by image ID when the reference's digest
 * is one, else by tag (default `latest`, Docker Hub names normalised).
 */
export function matchImage(
  inspection: TarballInspection,
  reference: string | ImageReference,
): TarballImage {
  const ref = typeof reference === 'string' ? parseImageReference(reference) : reference
  if (ref.digest !== undefined) {
    const byId = inspection.images.find((image) => image.imageId === ref.digest)
    if (byId) return byId
  }
  // A bare `repo@digest` names content, not a tag; `latest` must not stand in for it.
  if (ref.digest === undefined || ref.tag !== undefined) {
    const wanted = normalizeTaggedName(ref)
    const byTag = inspection.images.find((image) =>
      image.repoTags.some((tag) => normalizedTag(tag) === wanted),
    )
    if (byTag) return byTag
  }
  const found = inspection.images
    .map((image) => `${image.imageId} (${image.repoTags.join(', ') || 'untagged'})`)
    .join('; ')
  throw new ImageMismatchError(`Tarball does not contain ${formatReference(ref)}; it has ${found}`)
}

async function collectJsonEntries(
  extract: tar.Extract,
  maxJsonBytes: number,
  maxMetadataBytes: number,
): Promise<Map<string, JsonEntry>> {
  const entries = new Map<string, JsonEntry>()
  let kept = 0
  for await (const entry of extract) {
    const name = entry.header.name.replace(/^\.\//, '')
    if (!mayHoldJson(name) || entry.header.type !== 'file') {
      entry.resume()
      continue
    }
    if (entry.header.size > maxJsonBytes) {
      // Layers are blobs too; only metadata files are required to be small.
      if (OCI_BLOB.test(name)) {
        entry.resume()
        continue
      }
      throw new InvalidTarballError(`${name} is larger than ${maxJsonBytes} bytes`)
    }
    const chunks: Buffer[] = []
    for await (const chunk of entry) chunks.push(chunk as Buffer)
    const bytes = Buffer.concat(chunks)
    if (OCI_BLOB.test(name) && !looksLikeJsonObject(bytes)) continue // e.g. a small layer
    kept += bytes.length
    if (kept > maxMetadataBytes) {
      throw new InvalidTarballError(`Tarball metadata exceeds ${maxMetadataBytes} bytes`)
    }
    entries.set(name, {
      bytes,
      digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}`,
    })
  }
  return entries
}

function looksLikeJsonObject(bytes: Buffer): boolean {
  return bytes.toString('latin1', 0, 64).trimStart().startsWith('{')
}

function mayHoldJson(name: string): boolean {
  return (
    name === 'manifest.json' ||
    name === 'index.json' ||
    CLASSIC_CONFIG.test(name) ||
    OCI_BLOB.test(name)
  )
}

function interpret(entries: Map<string, JsonEntry>): TarballInspection {
  const images = new Map<string, Set<string>>()
  const add = (imageId: string, tags: Iterable<string>) => {
    const set = images.get(imageId) ?? new Set()
    for (const tag of tags) set.add(tag)
    images.set(imageId, set)
  }

  const manifest = entries.get('manifest.json')
  const index = entries.get('index.json')
  if (!manifest && !index) {
    throw new InvalidTarballError('Not a docker save tarball: no manifest.json or index.json')
  }
  if (manifest) {
    for (const item of asArray(parseJson(manifest, 'manifest.json'), 'manifest.json')) {
      const { Config, RepoTags } = asRecord(item, 'manifest.json entry')
      const hex = typeof Config === 'string' ? CONFIG_PATH.exec(Config)?.[1] : undefined
      if (hex === undefined) {
        throw new InvalidTarballError(
          `manifest.json names an unexpected config ${JSON.stringify(Config)}`,
        )
      }
      const tags = Array.isArray(RepoTags) ? RepoTags.filter((t) => typeof t === 'string') : []
      add(verifiedConfig(entries, Config as string, `sha256:${hex}`), tags)
    }
  }
  if (index) {
    for (const { imageId, tags } of walkIndex(entries, parseJson(index, 'index.json'), [], 0)) {
      add(imageId, tags)
    }
  }
  if (images.size === 0) throw new InvalidTarballError('Tarball contains no image')
  return { images: [...images].map(([imageId, tags]) => ({ imageId, repoTags: [...tags] })) }
}

interface Descriptor {
  mediaType?: unknown
  digest?: unknown
  annotations?: unknown
}

/** Follows an OCI index down to image manifests; yields each config digest with its tags. */
function* walkIndex(
  entries: Map<string, JsonEntry>,
  index: unknown,
  inheritedTags: string[],
  depth: number,
): Generator<{ imageId: string; tags: string[] }> {
  if (depth > MAX_OCI_INDEX_DEPTH) throw new InvalidTarballError('OCI indexes nested too deeply')
  for (const item of asArray(asRecord(index, 'OCI index').manifests, 'OCI index manifests')) {
    const descriptor: Descriptor = asRecord(item, 'OCI descriptor')
    const tags = [...inheritedTags, ...tagsOf(descriptor)]
    if (!isDigest(descriptor.digest)) {
      throw new InvalidTarballError('OCI descriptor without sha256 digest')
    }
    const path = blobPath(descriptor.digest)
    // Multi-platform indexes list platforms whose blobs were not saved; skip those.
    if (!entries.has(path)) continue
    const blob = asRecord(parseJson(verifiedBlob(entries, path, descriptor.digest), path), path)
    if (OCI_INDEX_TYPES.has(descriptor.mediaType as string) || Array.isArray(blob.manifests)) {
      yield* walkIndex(entries, blob, tags, depth + 1)
      continue
    }
    const configDigest = asRecord(blob.config, `${path} config`).digest
    if (!isDigest(configDigest)) {
      throw new InvalidTarballError(`${path} has no sha256 config digest`)
    }
    yield { imageId: verifiedConfig(entries, blobPath(configDigest), configDigest), tags }
  }
}

/** Full image names from a descriptor's annotations; a bare tag cannot be used without a repo. */
function tagsOf(descriptor: Descriptor): string[] {
  const annotations = asRecord(descriptor.annotations ?? {}, 'OCI annotations')
  const containerd = annotations['io.containerd.image.name']
  if (typeof containerd === 'string') return [containerd]
  const ref = annotations['org.opencontainers.image.ref.name']
  return typeof ref === 'string' && /[:/]/.test(ref) ? [ref] : []
}

function verifiedConfig(entries: Map<string, JsonEntry>, path: string, digest: string): string {
  if (!entries.has(path)) throw new InvalidTarballError(`Image config ${path} is missing`)
  verifiedBlob(entries, path, digest)
  return digest
}

function verifiedBlob(entries: Map<string, JsonEntry>, path: string, digest: string): JsonEntry {
  const entry = entries.get(path)!
  if (entry.digest !== digest) {
    throw new InvalidTarballError(`${path} does not match its digest ${digest}`)
  }
  return entry
}

function blobPath(digest: string): string {
  return `blobs/sha256/${digest.slice('sha256:'.length)}`
}

function parseJson(entry: JsonEntry, name: string): unknown {
  try {
    return JSON.parse(entry.bytes.toString('utf8'))
  } catch (err) {
    throw new InvalidTarballError(`${name} is not valid JSON`, { cause: err })
  }
}

function asArray(value: unknown, what: string): unknown[] {
  if (!Array.isArray(value)) throw new InvalidTarballError(`${what} is not a list`)
  return value
}

function asRecord(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new InvalidTarballError(`${what} is not an object`)
  }
  return value as Record<string, unknown>
}

function normalizedTag(tag: string): string | undefined {
  try {
    return normalizeTaggedName(parseImageReference(tag))
  } catch {
    return undefined // a tag we cannot parse matches nothing
  }
}

function formatReference(ref: ImageReference): string {
  return `${ref.repo}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`
}

/** Waits for 'drain', or rejects with the reason once `signal` aborts. */
function drained(stream: tar.Extract, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      stream.off('drain', onDrain)
      reject(signal.reason)
    }
    const onDrain = () => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }
    stream.once('drain', onDrain)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}
