/**
 * Stores an uploaded `docker save` tarball, reading the upload once: each chunk goes to the
 * blob store's temporary file (hashed, size-capped) and then to the tarball parser, with
 * backpressure from both. The blob is committed only if the tarball holds the named image.
 */

import type { BlobStore, BlobWriteOptions, StagedBlob, StoredBlob } from '@mtc/blobs'
import { parseImageReference } from '../names.ts'
import {
  createTarballSink,
  matchImage,
  type TarballImage,
  type TarballInspection,
  type TarballInspectorInit,
  type TarballSink,
} from './tarball.ts'

export interface IngestOptions extends BlobWriteOptions, TarballInspectorInit {
  /** Image reference the tarball must contain, e.g. `registry.local/web:1.4`. */
  reference: string
}

export interface IngestedImage {
  blob: StoredBlob
  /** The image the reference named. */
  image: TarballImage
  inspection: TarballInspection
}

export async function ingestImageTarball(
  store: BlobStore,
  source: AsyncIterable<Uint8Array>,
  options: IngestOptions,
): Promise<IngestedImage> {
  const reference = parseImageReference(options.reference) // reject before reading the upload
  const sink = createTarballSink(options)
  let staged: StagedBlob
  try {
    staged = await store.stage(tee(source, sink), options)
  } catch (err) {
    sink.abort()
    throw err
  }
  try {
    const inspection = await sink.end()
    const image = matchImage(inspection, reference)
    return { blob: await staged.commit(), image, inspection }
  } catch (err) {
    await staged.discard()
    throw err
  }
}

async function* tee(source: AsyncIterable<Uint8Array>, sink: TarballSink) {
  for await (const chunk of source) {
    yield chunk // to disk first, so the size limit applies before the parser sees the bytes
    await sink.write(chunk)
  }
}
